//! STUN and ChannelData over a byte stream (TURN over TCP and TLS, RFC 8656
//! §3.1): ChannelData frames are padded to a multiple of 4 bytes there.

/// Frame bytes for a stream: ChannelData is padded to a multiple of 4.
pub fn framed(bytes: &[u8]) -> Vec<u8> {
    let padded = (bytes.len() + 3) & !3;
    let mut v = Vec::with_capacity(padded);
    v.extend_from_slice(bytes);
    v.resize(padded, 0);
    v
}
