//! The probe payload every media packet carries: who sent it, in which
//! measurement step, its sequence number and when it was sent (nanoseconds on
//! the generator's monotonic clock; sender and receiver are the same process,
//! so one-way latency needs no clock sync). The rest of the packet is zeros
//! up to `--size`.

/// "TLG1": packets from another run or garbage are not counted.
pub const MAGIC: u32 = 0x544c_4731;
pub const HEADER: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub epoch: u32,
    pub stream: u32,
    pub seq: u32,
    pub sent_ns: u64,
}

impl Probe {
    /// Write the header into `out[..HEADER]`; the caller owns the padding.
    pub fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.epoch.to_le_bytes());
        out[8..12].copy_from_slice(&self.stream.to_le_bytes());
        out[12..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    pub fn read(b: &[u8]) -> Option<Probe> {
        let b = b.get(..HEADER)?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if u32_at(0) != MAGIC {
            return None;
        }
        Some(Probe {
            epoch: u32_at(4),
            stream: u32_at(8),
            seq: u32_at(12),
            sent_ns: u64::from_le_bytes(b[16..24].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_bytes() {
        let p = Probe {
            epoch: 3,
            stream: 1999,
            seq: 42,
            sent_ns: 123_456_789_012,
        };
        let mut b = [0u8; 160];
        p.write(&mut b);
        assert_eq!(Probe::read(&b), Some(p));
        assert_eq!(Probe::read(&b[..HEADER - 1]), None);
        b[0] ^= 1;
        assert_eq!(Probe::read(&b), None);
    }
}
