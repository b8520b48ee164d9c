//! Protocol v1 conformance (tests/src/conformance.rs) against each signaling
//! host, with real relays heartbeating into it.

use tern_tests::conformance::{run_all, Target};
use tern_tests::spin_up::{SpinStore, SpinUp};
use tern_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn origin_conforms() {
    let origin = Origin::start("conf-origin");
    let mut t = Target::with_relays("origin", origin.ws_url(), origin.addr, origin.addr);
    run_all(&mut t).await;
}

/// The Spin artifact (the very .wasm spin.toml names, hosted by `tern spin`)
/// over the HTTP transport.
#[tokio::test(flavor = "multi_thread")]
async fn spin_artifact_conforms_over_http() {
    let app = SpinApp::start();
    let url = format!("{}/v1/http", app.url());
    let mut t = Target::with_relays("spin", url, app.addr, app.addr);
    run_all(&mut t).await;
}

/// Tern's Spin app on the real Spin runtime (`spin up`, spin.toml as a user
/// runs it) over the HTTP transport, on `store`.
async fn real_spin_conforms(name: &'static str, store: SpinStore) {
    let app = SpinUp::start(store, &[]);
    let url = format!("{}/v1/http", app.url());
    let mut t = Target::with_relays(name, url, app.addr, app.addr);
    run_all(&mut t).await;
}

/// Spin's default store: a SQLite file private to one `spin up`.
#[tokio::test(flavor = "multi_thread")]
async fn real_spin_conforms_on_its_sqlite_store() {
    real_spin_conforms("spin up (sqlite)", SpinStore::Sqlite).await;
}

/// Spin's Redis store (runtime-config.toml), the multi-instance setup.
#[tokio::test(flavor = "multi_thread")]
async fn real_spin_conforms_on_its_redis_store() {
    let port = free_tcp_port();
    let _redis = start_redis(port, None);
    let url = format!("redis://127.0.0.1:{port}");
    real_spin_conforms("spin up (redis)", SpinStore::Redis(url)).await;
}

/// `tern gateway` at `gateway`, bridging WebSockets to the HTTP transport
/// at `upstream` (a Spin app's `/v1/http`).
fn start_gateway(gateway: std::net::SocketAddr, upstream: &str) -> Proc {
    let p = Proc {
        child: std::process::Command::new(bin("tern"))
            .args(["gateway", "--listen", &gateway.to_string()])
            .args(["--upstream", upstream])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("tern gateway"),
        name: "tern gateway".into(),
    };
    wait_until(std::time::Duration::from_secs(30), || {
        http_get(gateway, "/healthz").is_ok_and(|(s, _)| s == 200)
    })
    .expect("gateway healthy (its upstream answers)");
    p
}

/// Real Spin behind `tern gateway`: WebSocket clients, as browsers.
#[tokio::test(flavor = "multi_thread")]
async fn real_spin_conforms_through_the_gateway() {
    let app = SpinUp::start(SpinStore::Sqlite, &[]);
    let gateway: std::net::SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let _gw = start_gateway(gateway, &format!("{}/v1/http", app.url()));
    let url = format!("ws://{gateway}/v1/signal");
    let mut t = Target::with_relays("spin up (gateway)", url, gateway, app.addr);
    run_all(&mut t).await;
}

/// The same Spin artifact behind `tern gateway`: clients speak WebSocket to
/// the gateway, which bridges each socket to an HTTP-transport connection.
#[tokio::test(flavor = "multi_thread")]
async fn spin_artifact_conforms_through_the_gateway() {
    let app = SpinApp::start();
    let port = free_tcp_port();
    let gateway: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _gw = start_gateway(gateway, &format!("{}/v1/http", app.url()));
    // The gateway passes the app's directory through.
    let url = format!("ws://{gateway}/v1/signal");
    let mut t = Target::with_relays("spin-gateway", url, gateway, app.addr);
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
