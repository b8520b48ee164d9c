//! The backup archive format, as a sans-IO encoder and decoder: bytes in,
//! bytes out, no files, sockets or clocks. The caller passes the key, the
//! nonce prefix (randomness) and the creation time in.
//!
//! ```text
//! archive = header chunk*
//! header  = "TERNBAK1" u16:len body                      (plaintext)
//! body    = u8:key-id-len key-id  [u8;7]:nonce-prefix
//!           u8:id-len backup-id  u64:created-ms  u32:chunk-size
//! chunk   = u32:len ciphertext(len bytes, 16-byte GCM tag at the end)
//! ```
//!
//! The payload (meta, then every entry, then an end mark; see [`Frame`]) is
//! compressed with zstd, cut into `chunk-size` pieces and each piece sealed
//! with AES-256-GCM. Chunking keeps memory flat whatever the store's size;
//! the nonce of chunk `i` is `prefix || i (u32 BE) || last (u8)`, so chunks
//! cannot be reordered, dropped or the archive truncated without a tag
//! failing (the STREAM construction). The whole header is the associated data
//! of every chunk: the key id, backup id and time cannot be edited either.
//! A fresh random prefix per archive means a key never sees a nonce twice.

use std::io::Write as _;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use super::keys::{Key, Keyring};

pub const MAGIC: &[u8; 8] = b"TERNBAK1";
/// Plaintext bytes (compressed payload) per sealed chunk.
pub const CHUNK_SIZE: usize = 1 << 20;
const TAG_LEN: usize = 16;
/// zstd's default level: ~4-8x on JSON at several hundred MB/s per core.
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a Tern backup archive (bad magic)")]
    BadMagic,
    #[error("archive is truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("the archive was made with key `{0}`, which is not in the keyring")]
    UnknownKey(String),
    #[error(
        "authentication failed at chunk {chunk}: the archive was modified, or key `{key_id}` \
         is not the key it was made with"
    )]
    Authentication { chunk: u64, key_id: String },
    #[error("compression: {0}")]
    Compression(String),
}

/// The plaintext header of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key_id: String,
    pub nonce_prefix: [u8; 7],
    pub backup_id: String,
    pub created_ms: u64,
    pub chunk_size: u32,
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.push(self.key_id.len() as u8);
        body.extend_from_slice(self.key_id.as_bytes());
        body.extend_from_slice(&self.nonce_prefix);
        body.push(self.backup_id.len() as u8);
        body.extend_from_slice(self.backup_id.as_bytes());
        body.extend_from_slice(&self.created_ms.to_be_bytes());
        body.extend_from_slice(&self.chunk_size.to_be_bytes());
        let mut out = Vec::with_capacity(10 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parse a header from the start of `buf`; returns it and its length.
    pub fn decode(buf: &[u8]) -> Result<(Header, usize), ArchiveError> {
        if buf.len() < 10 {
            return Err(ArchiveError::Malformed("shorter than a header"));
        }
        if &buf[..8] != MAGIC {
            return Err(ArchiveError::BadMagic);
        }
        let len = u16::from_be_bytes([buf[8], buf[9]]) as usize;
        let mut r = Reader(
            buf.get(10..10 + len)
                .ok_or(ArchiveError::Malformed("header"))?,
        );
        let key_id = r.string8()?;
        let nonce_prefix = r.take(7)?.try_into().expect("7 bytes");
        let backup_id = r.string8()?;
        let created_ms = r.u64()?;
        let chunk_size = r.u32()?;
        Ok((
            Header {
                key_id,
                nonce_prefix,
                backup_id,
                created_ms,
                chunk_size,
            },
            10 + len,
        ))
    }
}

fn nonce(prefix: &[u8; 7], chunk: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&(chunk as u32).to_be_bytes());
    n[11] = last as u8;
    n
}

/// One unit of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// JSON metadata (store kind, non-secret config, version): first.
    Meta(Vec<u8>),
    /// One key of one bucket.
    Entry {
        bucket: String,
        key: String,
        value: Vec<u8>,
    },
    /// Last frame: how many entries came before it.
    End { entries: u64 },
}

const F_META: u8 = b'M';
const F_ENTRY: u8 = b'E';
const F_END: u8 = b'Z';

/// Seals compressed bytes into chunks, counting them for the nonces.
struct Sealer {
    cipher: Aes256Gcm,
    prefix: [u8; 7],
    aad: Vec<u8>,
    chunk: u64,
    out: Vec<u8>,
}

impl Sealer {
    fn seal(&mut self, plain: &[u8], last: bool) {
        let n = nonce(&self.prefix, self.chunk, last);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: plain,
                    aad: &self.aad,
                },
            )
            .expect("AES-GCM encryption of a bounded chunk cannot fail");
        self.out
            .extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        self.out.extend_from_slice(&sealed);
        self.chunk += 1;
    }
}

/// Builds an archive. Push entries in; take sealed bytes out with
/// [`Encoder::take_output`] whenever convenient (each take returns what is
/// ready so far, so the caller can stream it), then [`Encoder::finish`].
pub struct Encoder {
    sealer: Sealer,
    /// Compressed bytes accumulate in the Vec until a chunk is full.
    zstd: zstd::stream::write::Encoder<'static, Vec<u8>>,
    entries: u64,
    plain_bytes: u64,
}

impl Encoder {
    pub fn new(
        key: &Key,
        nonce_prefix: [u8; 7],
        backup_id: &str,
        created_ms: u64,
        meta: &[u8],
    ) -> Result<Encoder, ArchiveError> {
        let header = Header {
            key_id: key.id.clone(),
            nonce_prefix,
            backup_id: backup_id.to_string(),
            created_ms,
            chunk_size: CHUNK_SIZE as u32,
        };
        let aad = header.encode();
        let zstd =
            zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(compression)?;
        let mut e = Encoder {
            sealer: Sealer {
                cipher: Aes256Gcm::new_from_slice(&key.bytes).expect("32-byte key"),
                prefix: nonce_prefix,
                out: aad.clone(),
                aad,
                chunk: 0,
            },
            zstd,
            entries: 0,
            plain_bytes: 0,
        };
        e.write_frame(F_META, &[meta])?;
        Ok(e)
    }

    pub fn push_entry(
        &mut self,
        bucket: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), ArchiveError> {
        self.entries += 1;
        self.write_frame(F_ENTRY, &[bucket.as_bytes(), key.as_bytes(), value])
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Uncompressed payload bytes so far.
    pub fn plain_bytes(&self) -> u64 {
        self.plain_bytes
    }

    /// A frame is its tag, then each part length-prefixed (u32 BE).
    fn write_frame(&mut self, tag: u8, parts: &[&[u8]]) -> Result<(), ArchiveError> {
        self.zstd.write_all(&[tag]).map_err(compression)?;
        self.plain_bytes += 1;
        for p in parts {
            self.zstd
                .write_all(&(p.len() as u32).to_be_bytes())
                .map_err(compression)?;
            self.zstd.write_all(p).map_err(compression)?;
            self.plain_bytes += 4 + p.len() as u64;
        }
        // Seal whole chunks as soon as the compressor has produced them.
        while self.zstd.get_ref().len() >= CHUNK_SIZE {
            let piece: Vec<u8> = self.zstd.get_mut().drain(..CHUNK_SIZE).collect();
            self.sealer.seal(&piece, false);
        }
        Ok(())
    }

    /// Sealed bytes ready so far (the header first).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.sealer.out)
    }

    /// Write the end mark and seal the rest; returns the remaining bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, ArchiveError> {
        let n = self.entries;
        self.write_frame(F_END, &[&n.to_be_bytes()])?;
        let Encoder {
            mut sealer, zstd, ..
        } = self;
        let rest = zstd.finish().map_err(compression)?;
        // Strictly more than a chunk left: seal full ones; the final chunk
        // (marked last) keeps 1..=CHUNK_SIZE bytes, never zero unless the
        // whole remainder is empty.
        let mut at = 0;
        while rest.len() - at > CHUNK_SIZE {
            sealer.seal(&rest[at..at + CHUNK_SIZE], false);
            at += CHUNK_SIZE;
        }
        sealer.seal(&rest[at..], true);
        Ok(sealer.out)
    }
}

fn compression(e: std::io::Error) -> ArchiveError {
    ArchiveError::Compression(e.to_string())
}

/// An archive whose every chunk has been authenticated: the compressed
/// payload, ready to be read as frames (see [`Opened::frames`]).
pub struct Opened {
    pub header: Header,
    compressed: Vec<u8>,
}

/// Authenticate and decrypt a whole archive. Nothing in it is trusted, or
/// returned, until every chunk's tag has been checked, the last chunk is
/// marked last and nothing follows it.
pub fn open(archive: &[u8], keyring: &Keyring) -> Result<Opened, ArchiveError> {
    let (header, mut at) = Header::decode(archive)?;
    let aad = &archive[..at];
    let key = keyring
        .get(&header.key_id)
        .ok_or_else(|| ArchiveError::UnknownKey(header.key_id.clone()))?;
    let cipher = Aes256Gcm::new_from_slice(&key.bytes).expect("32-byte key");
    let mut compressed = Vec::new();
    let mut chunk = 0u64;
    loop {
        let len_bytes = archive
            .get(at..at + 4)
            .ok_or(ArchiveError::Malformed("missing final chunk"))?;
        let len = u32::from_be_bytes(len_bytes.try_into().unwrap()) as usize;
        at += 4;
        if len < TAG_LEN || len > header.chunk_size as usize + TAG_LEN {
            return Err(ArchiveError::Malformed("chunk length"));
        }
        let sealed = archive
            .get(at..at + len)
            .ok_or(ArchiveError::Malformed("chunk cut short"))?;
        at += len;
        let last = at == archive.len();
        let n = nonce(&header.nonce_prefix, chunk, last);
        let plain = cipher
            .decrypt(Nonce::from_slice(&n), Payload { msg: sealed, aad })
            .map_err(|_| ArchiveError::Authentication {
                chunk,
                key_id: header.key_id.clone(),
            })?;
        compressed.extend_from_slice(&plain);
        chunk += 1;
        if last {
            return Ok(Opened { header, compressed });
        }
    }
}

impl Opened {
    /// The payload's frames, decompressed as they are read.
    pub fn frames(&self) -> Result<Frames<'_>, ArchiveError> {
        Ok(Frames {
            zstd: zstd::stream::read::Decoder::new(&self.compressed[..]).map_err(compression)?,
            done: false,
        })
    }
}

pub struct Frames<'a> {
    zstd: zstd::stream::read::Decoder<'static, std::io::BufReader<&'a [u8]>>,
    done: bool,
}

impl Frames<'_> {
    fn part(&mut self) -> Result<Vec<u8>, ArchiveError> {
        use std::io::Read as _;
        let mut len = [0u8; 4];
        self.zstd
            .read_exact(&mut len)
            .map_err(|_| ArchiveError::Malformed("frame cut short"))?;
        let mut v = vec![0u8; u32::from_be_bytes(len) as usize];
        self.zstd
            .read_exact(&mut v)
            .map_err(|_| ArchiveError::Malformed("frame cut short"))?;
        Ok(v)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, ArchiveError> {
        use std::io::Read as _;
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.zstd
            .read_exact(&mut tag)
            .map_err(|_| ArchiveError::Malformed("payload ends without an end mark"))?;
        let utf8 = |v: Vec<u8>| String::from_utf8(v).map_err(|_| ArchiveError::Malformed("utf-8"));
        let f = match tag[0] {
            F_META => Frame::Meta(self.part()?),
            F_ENTRY => Frame::Entry {
                bucket: utf8(self.part()?)?,
                key: utf8(self.part()?)?,
                value: self.part()?,
            },
            F_END => {
                let n = self.part()?;
                let n: [u8; 8] = n
                    .try_into()
                    .map_err(|_| ArchiveError::Malformed("end mark"))?;
                self.done = true;
                Frame::End {
                    entries: u64::from_be_bytes(n),
                }
            }
            _ => return Err(ArchiveError::Malformed("unknown frame")),
        };
        Ok(Some(f))
    }
}

impl Iterator for Frames<'_> {
    type Item = Result<Frame, ArchiveError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_frame() {
            Ok(f) => f.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Byte-slice reader for the header.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ArchiveError> {
        if self.0.len() < n {
            return Err(ArchiveError::Malformed("header"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn string8(&mut self) -> Result<String, ArchiveError> {
        let n = self.take(1)?[0] as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| ArchiveError::Malformed("header"))
    }
    fn u64(&mut self) -> Result<u64, ArchiveError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, ArchiveError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, b: u8) -> Key {
        Key {
            id: id.into(),
            bytes: [b; 32],
        }
    }

    fn build(entries: &[(&str, &str, Vec<u8>)]) -> Vec<u8> {
        let mut e = Encoder::new(&key("k1", 7), [1; 7], "b-1", 42, b"{\"m\":1}").unwrap();
        let mut out = e.take_output();
        for (b, k, v) in entries {
            e.push_entry(b, k, v).unwrap();
            out.extend(e.take_output());
        }
        out.extend(e.finish().unwrap());
        out
    }

    fn frames(archive: &[u8], ring: &Keyring) -> Result<Vec<Frame>, ArchiveError> {
        open(archive, ring)?.frames()?.collect()
    }

    #[test]
    fn round_trip_small_and_multi_chunk() {
        let ring = Keyring::new(vec![key("k1", 7)]);
        let small = vec![("default", "room/a", b"{}".to_vec())];
        let f = frames(&build(&small), &ring).unwrap();
        assert_eq!(f[0], Frame::Meta(b"{\"m\":1}".to_vec()));
        assert_eq!(
            f[1],
            Frame::Entry {
                bucket: "default".into(),
                key: "room/a".into(),
                value: b"{}".to_vec()
            }
        );
        assert_eq!(f[2], Frame::End { entries: 1 });

        // Incompressible values force several chunks.
        let mut x = 1u64;
        let big: Vec<_> = (0..40)
            .map(|i| {
                let v = (0..100_000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                (
                    "calls",
                    Box::leak(format!("k{i}").into_boxed_str()) as &str,
                    v,
                )
            })
            .collect();
        let a = build(&big);
        assert!(a.len() > 3 * CHUNK_SIZE);
        let f = frames(&a, &ring).unwrap();
        assert_eq!(f.len(), 42);
        assert_eq!(f[41], Frame::End { entries: 40 });
        let opened = open(&a, &ring).unwrap();
        assert_eq!(opened.header.backup_id, "b-1");
        assert_eq!(opened.header.created_ms, 42);

        // Truncating at a chunk boundary is caught: the last flag is wrong.
        let (_, hl) = Header::decode(&a).unwrap();
        let first_len = u32::from_be_bytes(a[hl..hl + 4].try_into().unwrap()) as usize;
        let cut = &a[..hl + 4 + first_len];
        assert!(matches!(
            open(cut, &ring),
            Err(ArchiveError::Authentication { chunk: 0, .. })
        ));
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let ring = Keyring::new(vec![key("k1", 7)]);
        let a = build(&[("default", "k", b"value".to_vec())]);
        for i in 0..a.len() {
            let mut t = a.clone();
            t[i] ^= 0x01;
            assert!(frames(&t, &ring).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn wrong_or_unknown_key_is_refused() {
        let a = build(&[("default", "k", b"v".to_vec())]);
        let wrong = Keyring::new(vec![key("k1", 8)]);
        assert!(matches!(
            open(&a, &wrong),
            Err(ArchiveError::Authentication { .. })
        ));
        let other = Keyring::new(vec![key("k2", 7)]);
        assert!(matches!(open(&a, &other), Err(ArchiveError::UnknownKey(id)) if id == "k1"));
        // Rotation: an old key further down the ring still opens it.
        let rotated = Keyring::new(vec![key("k2", 9), key("k1", 7)]);
        assert!(frames(&a, &rotated).is_ok());
    }

    #[test]
    fn empty_store_archives_round_trip() {
        let ring = Keyring::new(vec![key("k1", 7)]);
        let f = frames(&build(&[]), &ring).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1], Frame::End { entries: 0 });
    }
}
