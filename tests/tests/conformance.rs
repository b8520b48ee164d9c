//! Protocol v1 conformance (tests/src/conformance.rs) against each signaling
//! host, with real relays heartbeating into it.

use tern_tests::conformance::{run_all, Target};
use tern_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn origin_conforms() {
    let origin = Origin::start("conf-origin");
    let a = start_relay(&origin, "a-1", "region-a");
    let b = start_relay(&origin, "b-1", "region-b");
    let mut t = Target {
        name: "origin",
        signal_url: origin.ws_url(),
        http: origin.addr,
        relays: vec![("a-1".into(), a), ("b-1".into(), b)],
    };
    run_all(&mut t).await;
}

/// The Spin artifact (the very .wasm spin.toml names, hosted by `tern spin`)
/// over the HTTP transport.
#[tokio::test(flavor = "multi_thread")]
async fn spin_artifact_conforms_over_http() {
    let app = SpinApp::start();
    let a = start_relay_at(app.addr, "a-1", "region-a", &[]);
    let b = start_relay_at(app.addr, "b-1", "region-b", &[]);
    let mut t = Target {
        name: "spin",
        signal_url: format!("{}/v1/http", app.url()),
        http: app.addr,
        relays: vec![("a-1".into(), a), ("b-1".into(), b)],
    };
    run_all(&mut t).await;
}

/// The same Spin artifact behind `tern gateway`: clients speak WebSocket to
/// the gateway, which bridges each socket to an HTTP-transport connection.
#[tokio::test(flavor = "multi_thread")]
async fn spin_artifact_conforms_through_the_gateway() {
    let app = SpinApp::start();
    let port = free_tcp_port();
    let gateway: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _gw = Proc {
        child: std::process::Command::new(bin("tern"))
            .args(["gateway", "--listen", &gateway.to_string()])
            .args(["--upstream", &format!("{}/v1/http", app.url())])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("tern gateway"),
        name: "tern gateway".into(),
    };
    wait_until(std::time::Duration::from_secs(30), || {
        http_get(gateway, "/healthz").is_ok_and(|(s, _)| s == 200)
    })
    .expect("gateway healthy (its upstream answers)");
    let a = start_relay_at(app.addr, "a-1", "region-a", &[]);
    let b = start_relay_at(app.addr, "b-1", "region-b", &[]);
    let mut t = Target {
        name: "spin-gateway",
        signal_url: format!("ws://{gateway}/v1/signal"),
        // The gateway passes the app's directory through.
        http: gateway,
        relays: vec![("a-1".into(), a), ("b-1".into(), b)],
    };
    run_all(&mut t).await;
}

/// The Cloudflare Worker under `wrangler dev --local`: room Durable Objects
/// terminate the WebSockets, the directory Durable Object takes the relays'
/// heartbeats.
#[tokio::test(flavor = "multi_thread")]
async fn cloudflare_worker_conforms() {
    use tern_tests::cloudflare::{start_tern_relay, WranglerDev};
    let edge = WranglerDev::start();
    let a = start_tern_relay(&edge.url(), "a-1", "region-a");
    let b = start_tern_relay(&edge.url(), "b-1", "region-b");
    let mut t = Target {
        name: "cloudflare",
        signal_url: format!("ws://{}/v1/signal", edge.addr),
        http: edge.addr,
        relays: vec![("a-1".into(), a), ("b-1".into(), b)],
    };
    run_all(&mut t).await;
}
