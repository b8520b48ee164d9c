//! Counters the engine keeps for metrics and load reports: traffic in and
//! out, drops by reason, authentication outcomes and quota hits. Plain
//! integers bumped on the packet path; the driver reads a copy.

/// Why the engine dropped something without answering (or instead of
/// answering). Every silent drop has exactly one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Neither STUN nor ChannelData, or a STUN message that does not parse.
    Malformed,
    /// A STUN response or an indication other than Send from a client.
    Unexpected,
    /// Media (ChannelData, Send) from a client without an allocation, or to a
    /// relayed address that has none.
    NoAllocation,
    /// ChannelData on a channel that is not bound.
    NoChannel,
    /// Media to or from a peer without a permission.
    NoPermission,
    /// The answer would exceed twice the request's size (unauthenticated).
    Amplification,
    /// Allocate attempts over the per-source-IP rate.
    RateLimited,
    /// Over the allocation's bandwidth quota.
    Bandwidth,
    /// A Send to one of the relay's own listener addresses: an allocation
    /// nested inside another would hide the real client behind the relay.
    OwnAddress,
}

impl DropReason {
    /// Every reason once, in declaration order, for exporting all counters.
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::Unexpected,
        DropReason::NoAllocation,
        DropReason::NoChannel,
        DropReason::NoPermission,
        DropReason::Amplification,
        DropReason::RateLimited,
        DropReason::Bandwidth,
        DropReason::OwnAddress,
    ];

    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Unexpected => "unexpected",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoChannel => "no_channel",
            DropReason::NoPermission => "no_permission",
            DropReason::Amplification => "amplification",
            DropReason::RateLimited => "rate_limited",
            DropReason::Bandwidth => "bandwidth",
            DropReason::OwnAddress => "own_address",
        }
    }
}

/// Which quota said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Allocations per username (486).
    UserAllocations,
    /// Allocations in total (508).
    TotalAllocations,
    /// Allocate attempts per source IP per second (dropped).
    AllocateRate,
    /// Bytes per second per allocation (dropped).
    Bandwidth,
    /// Permissions per allocation (508).
    Permissions,
    /// Channels per allocation (508).
    Channels,
}

impl Quota {
    /// Every quota once, in declaration order, for exporting all counters.
    pub const ALL: [Quota; 6] = [
        Quota::UserAllocations,
        Quota::TotalAllocations,
        Quota::AllocateRate,
        Quota::Bandwidth,
        Quota::Permissions,
        Quota::Channels,
    ];

    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::UserAllocations => "user_allocations",
            Quota::TotalAllocations => "total_allocations",
            Quota::AllocateRate => "allocate_rate",
            Quota::Bandwidth => "bandwidth",
            Quota::Permissions => "permissions",
            Quota::Channels => "channels",
        }
    }
}

/// Outcome of authenticating a request that needed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No credentials yet: answered 401 with REALM/NONCE (normal first leg).
    Challenged,
    /// Expired or foreign nonce: 438.
    StaleNonce,
    /// Wrong MAC, expired or malformed username, wrong realm: 401.
    Rejected,
    /// Credentials incomplete or algorithm negotiation broken: 400.
    BadRequest,
}

impl AuthOutcome {
    /// Every outcome once, in declaration order, for exporting all counters.
    pub const ALL: [AuthOutcome; 4] = [
        AuthOutcome::Challenged,
        AuthOutcome::StaleNonce,
        AuthOutcome::Rejected,
        AuthOutcome::BadRequest,
    ];

    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthOutcome::Challenged => "challenged",
            AuthOutcome::StaleNonce => "stale_nonce",
            AuthOutcome::Rejected => "rejected",
            AuthOutcome::BadRequest => "bad_request",
        }
    }
}

/// Counters for load reports and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams relayed in either direction.
    pub relayed_packets: u64,
    /// Payload bytes relayed in either direction.
    pub relayed_bytes: u64,
    /// Everything clients sent us (STUN and ChannelData), before any check.
    pub client_packets_in: u64,
    /// Bytes of those client packets (whole messages and frames).
    pub client_bytes_in: u64,
    /// Everything peers sent to relayed addresses, before any check.
    pub peer_packets_in: u64,
    /// Payload bytes of those peer datagrams.
    pub peer_bytes_in: u64,
    /// Control answers (and Data indications) queued for clients.
    pub control_packets_out: u64,
    /// Bytes of those control answers and Data indications.
    pub control_bytes_out: u64,
    /// Client media handed to another allocation of the same engine without
    /// the kernel (each is also counted in both relayed directions).
    pub local_deliveries: u64,
    drops: [u64; DropReason::ALL.len()],
    quota_hits: [u64; Quota::ALL.len()],
    auth: [u64; AuthOutcome::ALL.len()],
}

impl Stats {
    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Times `quota` refused an Allocate or dropped a packet.
    pub fn quota_hits(&self, quota: Quota) -> u64 {
        self.quota_hits[quota as usize]
    }

    /// Requests whose authentication ended in `outcome`.
    pub fn auth(&self, outcome: AuthOutcome) -> u64 {
        self.auth[outcome as usize]
    }

    /// All drops whatever the reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Add another engine's counters (a multi-core relay reports the sum of
    /// its per-core engines).
    pub fn merge(&mut self, o: &Stats) {
        self.relayed_packets += o.relayed_packets;
        self.relayed_bytes += o.relayed_bytes;
        self.client_packets_in += o.client_packets_in;
        self.client_bytes_in += o.client_bytes_in;
        self.peer_packets_in += o.peer_packets_in;
        self.peer_bytes_in += o.peer_bytes_in;
        self.control_packets_out += o.control_packets_out;
        self.control_bytes_out += o.control_bytes_out;
        self.local_deliveries += o.local_deliveries;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        for (a, b) in self.quota_hits.iter_mut().zip(o.quota_hits) {
            *a += b;
        }
        for (a, b) in self.auth.iter_mut().zip(o.auth) {
            *a += b;
        }
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub(crate) fn quota_hit(&mut self, quota: Quota) {
        self.quota_hits[quota as usize] += 1;
    }

    pub(crate) fn auth_outcome(&mut self, outcome: AuthOutcome) {
        self.auth[outcome as usize] += 1;
    }
}
