//! Loading a Durable Object's keys into memory and writing changes back.
//! Values are stored as byte arrays (structured clone of a `Uint8Array`),
//! exactly the bytes the core wrote.

use std::collections::BTreeMap;

use worker::js_sys::{Map, Object, Reflect, Uint8Array};
use worker::wasm_bindgen::JsValue;
use worker::Storage;

use crate::store::Entries;

/// Most keys one storage call takes (Durable Object storage's batch limit).
const BATCH: usize = 128;

/// Every key the object holds.
pub async fn load(storage: &Storage) -> worker::Result<Entries> {
    let map: Map = storage.list().await?;
    let mut out = Entries::new();
    map.for_each(&mut |value, key| {
        if let Some(k) = key.as_string() {
            out.insert(k, Uint8Array::new(&value).to_vec());
        }
    });
    Ok(out)
}

/// Write `changes` (`None`: delete). Each storage call is atomic; a failure
/// part-way leaves storage behind the caller's memory, so the caller must
/// drop its copy and reload (see `room` and `directory`).
pub async fn flush(
    storage: &Storage,
    changes: BTreeMap<String, Option<Vec<u8>>>,
) -> worker::Result<()> {
    let (puts, deletes): (Vec<_>, Vec<_>) = changes.into_iter().partition(|(_, v)| v.is_some());
    for chunk in puts.chunks(BATCH) {
        let obj = Object::new();
        for (k, v) in chunk {
            let bytes = Uint8Array::from(v.as_deref().unwrap_or_default());
            Reflect::set(&obj, &JsValue::from_str(k), &bytes)?;
        }
        storage.put_multiple_raw(obj).await?;
    }
    let deletes: Vec<String> = deletes.into_iter().map(|(k, _)| k).collect();
    for chunk in deletes.chunks(BATCH) {
        storage.delete_multiple(chunk.to_vec()).await?;
    }
    Ok(())
}
