//! Rust bindings of the component's world (wit/signaling.wit): the
//! `wasi:keyvalue` imports and the `tern:signaling/handler` export. Its own
//! module so the glue that uses them imports downward.

wit_bindgen::generate!({
    path: "../../wit",
    world: "tern:signaling/signaling",
    generate_all,
});
