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
