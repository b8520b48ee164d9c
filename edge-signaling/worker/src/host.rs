//! Time and randomness, which the core takes from its host.

use edge_signaling::signaling::ENTROPY_BYTES;
use worker::js_sys::{self, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};

/// Wall clock, unix ms. In Workers it only advances across I/O (a Spectre
/// mitigation), so it is the time the current input arrived, which is what
/// the core wants.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Fresh random bytes from the runtime's CSPRNG (`crypto.getRandomValues`).
pub fn entropy() -> Result<Vec<u8>, JsValue> {
    random_bytes(ENTROPY_BYTES)
}

pub fn random_bytes(n: usize) -> Result<Vec<u8>, JsValue> {
    let crypto = Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))?;
    let get: js_sys::Function =
        Reflect::get(&crypto, &JsValue::from_str("getRandomValues"))?.dyn_into()?;
    let buf = Uint8Array::new_with_length(n as u32);
    get.call1(&crypto, &buf)?;
    Ok(buf.to_vec())
}
