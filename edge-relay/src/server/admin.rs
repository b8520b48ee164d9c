//! The HTTP admin listener: `GET /metrics` (Prometheus), `GET /healthz`
//! (200 "ok", 503 "draining"), `POST /drain` (same as SIGTERM). Plain
//! HTTP/1.1 with no authentication: bind it to loopback or a private network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::driver::Shards;
use super::heartbeat::Shared;
use super::metrics;

#[derive(Clone)]
pub struct Admin {
    pub shared: Arc<Shared>,
    pub shards: Shards,
}

impl Admin {
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => match self.shards.snapshot().await {
                Some(s) => {
                    let body = metrics::render(&s, metrics::process_cpu_seconds());
                    let mut r = text(StatusCode::OK, body);
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(
                            "text/plain; version=0.0.4; charset=utf-8",
                        ),
                    );
                    r
                }
                None => text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
            },
            (&Method::GET, "/healthz") => {
                if self.shared.draining.load(Ordering::Relaxed) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else {
                    text(StatusCode::OK, "ok\n")
                }
            }
            (&Method::POST, "/drain") => {
                self.shared.request_drain();
                text(StatusCode::ACCEPTED, "draining\n")
            }
            (_, "/metrics" | "/healthz" | "/drain") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// Bind the admin listener (a separate function so errors name the flag).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --admin {addr}"))
}
