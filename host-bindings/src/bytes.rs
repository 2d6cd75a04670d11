//! Bytes crossing into and out of JavaScript: for binary WebSocket messages an
//! `ArrayBuffer` or `Uint8Array` becomes base64 for the host, and base64 from the host
//! becomes a `Uint8Array`; HTTP bodies go out as bytes (`response.rs`). Done natively because a
//! JavaScript loop over megabytes would cost the handler timeout.

use base64::Engine;
use boa_engine::object::builtins::{AlignedVec, JsArrayBuffer, JsUint8Array};
use boa_engine::{Context, JsArgs, JsNativeError, JsResult, JsString, JsValue};

/// `__host.bytesToBase64(bytes)`: an `ArrayBuffer` or `Uint8Array` (its viewed range)
/// as base64; anything else is a `TypeError`.
pub(crate) fn bytes_to_base64(
    _: &JsValue,
    args: &[JsValue],
    ctx: &mut Context,
) -> JsResult<JsValue> {
    let bytes = js_bytes(args.get_or_undefined(0), ctx)?.ok_or_else(|| {
        JsNativeError::typ().with_message("expected an ArrayBuffer or a Uint8Array")
    })?;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(JsValue::from(JsString::from(text.as_str())))
}

/// `__host.base64ToBytes(text)`: a new `Uint8Array` holding what `text` encodes.
pub(crate) fn base64_to_bytes(
    _: &JsValue,
    args: &[JsValue],
    ctx: &mut Context,
) -> JsResult<JsValue> {
    let text = args
        .get_or_undefined(0)
        .to_string(ctx)?
        .to_std_string_escaped();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| JsNativeError::typ().with_message(format!("not base64: {e}")))?;
    let block = AlignedVec::from_slice(0, &bytes);
    let buffer = JsArrayBuffer::from_byte_block(block, ctx)?;
    Ok(JsUint8Array::from_array_buffer(buffer, ctx)?.into())
}

/// The bytes of an `ArrayBuffer` or `Uint8Array`, or None for any other value.
pub(crate) fn js_bytes(value: &JsValue, ctx: &mut Context) -> JsResult<Option<Vec<u8>>> {
    let Some(object) = value.as_object() else {
        return Ok(None);
    };
    if let Ok(array) = JsUint8Array::from_object(object.clone()) {
        return array.to_vec(ctx).map(Some);
    }
    if let Ok(buffer) = JsArrayBuffer::from_object(object.clone()) {
        return buffer.to_vec().map(Some).ok_or_else(|| {
            JsNativeError::typ()
                .with_message("ArrayBuffer is detached")
                .into()
        });
    }
    Ok(None)
}
