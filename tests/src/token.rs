//! The secrets every test deployment shares, and room tokens signed with
//! them.

pub const API_SECRET: &str = "test-api-secret-of-at-least-32-bytes";
pub const RELAY_SECRET: &str = "test-relay-secret-of-at-least-32-bytes";
/// The bearer token test origins serve `GET /v1/calls` with.
pub const CALLS_TOKEN: &str = "test-calls-token-of-at-least-32-bytes";

/// A room token signed with the test API secret.
pub fn token(room: &str, identity: &str, exp_offset_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    edge_signaling::token::mint(
        API_SECRET.as_bytes(),
        &edge_signaling::token::Claims {
            room: room.into(),
            sub: identity.into(),
            exp: (now + exp_offset_secs) as u64,
        },
    )
}
