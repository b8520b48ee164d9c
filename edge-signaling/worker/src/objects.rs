//! The Worker's Durable Object namespaces (wrangler.toml bindings) and how
//! to reach an object in each: shared by the objects that call one another
//! (rooms call the directory, the directory calls rooms) and the router.

use worker::{Env, Stub};

/// Binding of the room namespace (wrangler.toml).
const ROOMS: &str = "ROOMS";
/// Binding of the directory namespace (wrangler.toml).
const DIRECTORY: &str = "DIRECTORY";
/// The one directory object's name.
const DIRECTORY_NAME: &str = "directory";

/// The relay directory object.
pub fn directory(env: &Env) -> worker::Result<Stub> {
    env.durable_object(DIRECTORY)?
        .id_from_name(DIRECTORY_NAME)?
        .get_stub()
}

/// The object of room `room`.
pub fn room(env: &Env, room: &str) -> worker::Result<Stub> {
    env.durable_object(ROOMS)?.id_from_name(room)?.get_stub()
}
