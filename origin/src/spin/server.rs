//! Serving HTTP through the component's `wasi:http/incoming-handler`
//! export with wasmtime-wasi-http: one fresh instance per request, as
//! Spin's HTTP trigger does, from a component compiled and linked once.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView as _;

use super::manifest::HttpApp;
use crate::host::{self, HostState};
use crate::store::Kv;

pub struct SpinHost {
    pre: ProxyPre<HostState>,
    env: Vec<(String, String)>,
    kv: Kv,
    app: HttpApp,
}

impl SpinHost {
    /// Compile `wasm` and link what Spin's HTTP trigger provides.
    pub fn new(
        wasm: &[u8],
        env: Vec<(String, String)>,
        kv: Kv,
        app: HttpApp,
    ) -> anyhow::Result<SpinHost> {
        let engine = Engine::new(&Config::new())?;
        let component = Component::new(&engine, wasm)
            .map_err(anyhow::Error::from)
            .context("compiling the component")?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        host::add_keyvalue_to_linker(&mut linker)?;
        let pre = ProxyPre::new(linker.instantiate_pre(&component)?)
            .map_err(anyhow::Error::from)
            .context("the component does not export wasi:http/incoming-handler@0.2")?;
        Ok(SpinHost { pre, env, kv, app })
    }

    async fn handle(
        self: Arc<Self>,
        mut req: hyper::Request<Incoming>,
    ) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
        let Some(info) = self.app.path_info(req.uri().path()) else {
            return Ok(plain(404, "no route"));
        };
        let info = hyper::header::HeaderValue::from_str(info)?;
        req.headers_mut().insert("spin-path-info", info);
        let mut store = Store::new(
            self.pre.engine(),
            HostState::per_operation(self.kv.clone(), &self.env),
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let wasi_req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        // The guest may keep running after it sent the head (streaming the
        // body), so it runs in its own task.
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, wasi_req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Ok(plain(500, &format!("component answered an error: {e:?}"))),
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => "component never set a response".to_string(),
                    Ok(Err(e)) => format!("component trapped: {e:?}"),
                    Err(e) => format!("component task failed: {e}"),
                };
                tracing::error!(%why, "request failed");
                Ok(plain(500, &why))
            }
        }
    }
}

fn plain(status: u16, msg: &str) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(msg.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    hyper::Response::builder()
        .status(status)
        .body(body)
        .expect("static response")
}

/// Accept connections until the task is dropped.
pub async fn serve(host: Arc<SpinHost>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let host = host.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| host.clone().handle(req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}
