//! The HTTP admin listener: `GET /metrics` (Prometheus), `GET /healthz`
//! (200 "ok", 503 "draining"), `POST /drain` (same as SIGTERM). Plain
//! HTTP/1.1. With a token, /metrics and /drain need `Authorization: Bearer
//! <token>`; /healthz stays open because load balancers probe it without
//! credentials. Settings refuse a non-loopback listener without a token.

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

use super::heartbeat::Shared;
use super::inbox::Shards;
use super::metrics;
use super::stream::StreamLimits;

#[derive(Clone)]
pub(crate) struct Admin {
    pub shared: Arc<Shared>,
    pub shards: Shards,
    pub streams: Arc<StreamLimits>,
    /// Required as a bearer token for /metrics and /drain when set.
    pub token: Option<Arc<str>>,
}

impl Admin {
    pub(crate) async fn serve(self, listener: TcpListener) {
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

    /// Whether the request carries the admin token (always, without one).
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Constant time in the token's contents.
        given.len() == want.len()
            && given
                .bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if matches!(path, "/metrics" | "/drain") && !self.authorized(&req) {
            let mut r = text(StatusCode::UNAUTHORIZED, "admin token required\n");
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
        match (req.method(), path) {
            (&Method::GET, "/metrics") => match self.shards.snapshot().await {
                Some(s) => {
                    let mut body = metrics::render(&s, metrics::process_cpu_seconds());
                    self.streams.render(&mut body);
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
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --admin {addr}"))
}
