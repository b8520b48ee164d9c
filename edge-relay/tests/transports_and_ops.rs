//! The real `tern-relay` binary over TCP and TLS, its admin endpoint, what
//! its heartbeats list, and drain: SIGTERM during live streams loses no
//! packets of existing allocations before the deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_relay::stun::{attr, Class, Message, MessageBuilder, Method};
use tern_common::credentials;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const SECRET: &str = "ops-secret-of-at-least-thirty-two-bytes";
const REALM: &str = "tern";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: &str) {
        assert!(Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    /// Wait for exit; returns how long it took.
    fn wait_exit(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "relay did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tern-relay-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Relay {
    proc: Proc,
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: SocketAddr,
    admin: SocketAddr,
    cert: PathBuf,
}

fn start_relay(name: &str, extra: &[&str]) -> Relay {
    start_relay_env(name, extra, &[])
}

fn start_relay_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Relay {
    let dir = tmpdir(name);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    edge_relay::server::tls::ensure_self_signed(&cert, &key, &["localhost".into()]).unwrap();
    // Ports are probed free and then handed over, so another test's relayed
    // socket can take one in between: retry with fresh ports if the relay
    // exits while starting.
    for _ in 0..5 {
        let port = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
        let (udp, tcp, tls, admin) = (port(), port(), port(), port());
        let child = Command::new(env!("CARGO_BIN_EXE_tern-relay"))
            .args(["--listen", &udp.to_string()])
            .args(["--listen-tcp", &tcp.to_string()])
            .args(["--listen-tls", &tls.to_string()])
            .args(["--tls-cert", cert.to_str().unwrap()])
            .args(["--tls-key", key.to_str().unwrap()])
            .args(["--admin", &admin.to_string()])
            .args(["--allow-peer", "127.0.0.0/8", "--relay-ports", "ephemeral"])
            .args(extra)
            .env("TERN_RELAY_SECRET", SECRET)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tern-relay");
        let mut proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if http(admin, "GET", "/healthz").is_some() {
                return Relay {
                    proc,
                    udp,
                    tcp,
                    tls,
                    admin,
                    cert,
                };
            }
            if proc.0.try_wait().unwrap().is_some() {
                break; // exited (port taken?): try again
            }
            assert!(Instant::now() < deadline, "relay did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("relay did not start in 5 attempts");
}

/// Minimal HTTP/1.1 client: (status, body), None if not reachable.
fn http(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    http_as(addr, method, path, None)
}

/// [`http`] with `Authorization: Bearer <token>`.
fn http_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// A way to reach the relay: a UDP socket or a TCP/TLS stream.
enum Wire {
    Udp(UdpSocket, SocketAddr),
    Stream(Box<dyn ReadWrite>),
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

impl Wire {
    fn udp(server: SocketAddr) -> Wire {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Wire::Udp(s, server)
    }

    fn tcp(server: SocketAddr) -> Wire {
        let s = TcpStream::connect(server).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.set_nodelay(true).unwrap();
        Wire::Stream(Box::new(s))
    }

    fn tls(server: SocketAddr, cert: &PathBuf) -> Wire {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(cert).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(server).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Wire::Stream(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Wire::Udp(s, server) => {
                s.send_to(bytes, *server).unwrap();
            }
            Wire::Stream(s) => {
                let mut v = bytes.to_vec();
                v.resize((v.len() + 3) & !3, 0);
                s.write_all(&v).unwrap();
                s.flush().unwrap();
            }
        }
    }

    /// One message; ChannelData padding is consumed on streams.
    fn recv(&mut self) -> Vec<u8> {
        match self {
            Wire::Udp(s, _) => {
                let mut buf = [0u8; 2048];
                let (n, _) = s.recv_from(&mut buf).expect("answer from relay");
                buf[..n].to_vec()
            }
            Wire::Stream(s) => {
                let mut head = [0u8; 4];
                s.read_exact(&mut head).expect("frame from relay");
                let len = u16::from_be_bytes([head[2], head[3]]) as usize;
                let total = if head[0] >> 6 == 0 { 20 + len } else { 4 + len };
                let mut v = vec![0u8; (total + 3) & !3];
                v[..4].copy_from_slice(&head);
                s.read_exact(&mut v[4..]).unwrap();
                v.truncate(total);
                v
            }
        }
    }
}

struct Client {
    wire: Wire,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
    tid: u8,
}

impl Client {
    fn new(wire: Wire, identity: &str) -> Client {
        Client::with_secret(wire, identity, SECRET)
    }

    fn with_secret(wire: Wire, identity: &str, secret: &str) -> Client {
        let c = credentials::mint(secret.as_bytes(), identity, unix_now() + 600);
        Client {
            wire,
            key: edge_relay::auth::long_term_key(&c.username, REALM, &c.credential),
            username: c.username,
            nonce: Vec::new(),
            tid: 0,
        }
    }

    fn request(&mut self, method: Method, attrs: impl Fn(&mut MessageBuilder)) -> Vec<u8> {
        for _ in 0..2 {
            self.tid += 1;
            let mut b = MessageBuilder::new(method, Class::Request, [self.tid; 12]);
            attrs(&mut b);
            if !self.nonce.is_empty() {
                b.attr(attr::USERNAME, self.username.as_bytes())
                    .attr(attr::REALM, REALM.as_bytes())
                    .attr(attr::NONCE, &self.nonce)
                    .integrity(&self.key);
            }
            b.fingerprint();
            self.wire.send(&b.finish());
            let answer = self.wire.recv();
            let m = Message::parse(&answer).unwrap();
            // Retry after the challenge (no credentials sent yet) or a stale
            // nonce; a 401 to credentials is the answer.
            let retry = match code(&answer) {
                Some(401) => self.nonce.is_empty(),
                Some(438) => true,
                _ => false,
            };
            if retry && m.get(attr::NONCE).is_some() {
                self.nonce = m.get(attr::NONCE).unwrap().to_vec();
                continue;
            }
            return answer;
        }
        panic!("authentication did not converge");
    }

    /// Allocate and bind channel 0x4000 to `peer`; returns the relayed address.
    fn allocate_and_bind(&mut self, peer: SocketAddr) -> SocketAddr {
        let answer = self.request(Method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let m = Message::parse(&answer).unwrap();
        assert_eq!(m.class, Class::Success, "allocate: {:?}", code(&answer));
        assert!(m.verify_integrity(&self.key));
        let relayed =
            attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &m.transaction_id)
                .unwrap();
        let answer = self.request(Method::CHANNEL_BIND, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        assert_eq!(code(&answer), None);
        relayed
    }
}

fn code(bytes: &[u8]) -> Option<u16> {
    let m = Message::parse(bytes).unwrap();
    m.get(attr::ERROR_CODE).and_then(attr::decode_error_code)
}

fn channel_data(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x40, 0x00];
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn udp_peer() -> (UdpSocket, SocketAddr) {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let a = peer.local_addr().unwrap();
    (peer, a)
}

#[test]
fn tcp_and_tls_clients_relay_both_ways_and_metrics_count_it() {
    let mut relay = start_relay("streams", &[]);
    let (peer, peer_addr) = udp_peer();
    let mut buf = [0u8; 2048];
    let mut alive = Vec::new();
    for (name, wire) in [
        ("tcp", Wire::tcp(relay.tcp)),
        ("tls", Wire::tls(relay.tls, &relay.cert)),
    ] {
        let mut c = Client::new(wire, name);
        let relayed = c.allocate_and_bind(peer_addr);
        // 5 bytes: the frame is padded to 12 on the stream, not on UDP.
        c.wire.send(&channel_data(b"voice"));
        let (n, from) = peer.recv_from(&mut buf).expect("peer gets the data");
        assert_eq!((&buf[..n], from), (&b"voice"[..], relayed), "{name}");
        peer.send_to(b"echo!", relayed).unwrap();
        assert_eq!(c.wire.recv(), channel_data(b"echo!"), "{name}");
        // Binding over the stream reports the TCP source address.
        c.wire
            .send(&MessageBuilder::new(Method::BINDING, Class::Request, [7; 12]).finish());
        let m = c.wire.recv();
        assert_eq!(Message::parse(&m).unwrap().class, Class::Success);
        alive.push(c);
    }
    let (status, metrics) = http(relay.admin, "GET", "/metrics").unwrap();
    assert_eq!(status, 200);
    for needle in [
        "tern_relay_relayed_packets_total 4",
        "tern_relay_allocations 2",
        "tern_relay_channels 2",
        "tern_relay_connections{transport=\"tcp\"} 1",
        "tern_relay_connections{transport=\"tls\"} 1",
        "tern_relay_auth_total{outcome=\"challenged\"} 2",
        "process_cpu_seconds_total",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in\n{metrics}");
    }
    // Admin drain: health flips, and with allocations still open the relay
    // keeps running until --drain-ms (default 1 s).
    assert_eq!(
        http(relay.admin, "GET", "/healthz").unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(http(relay.admin, "POST", "/drain").unwrap().0, 202);
    assert_eq!(http(relay.admin, "GET", "/healthz").unwrap().0, 503);
    assert_eq!(http(relay.admin, "GET", "/nope").unwrap().0, 404);
    // Closing a connection ends its allocation.
    alive.pop();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !http(relay.admin, "GET", "/metrics")
        .unwrap()
        .1
        .contains("tern_relay_allocations 1")
    {
        assert!(Instant::now() < deadline, "TLS close did not release");
        std::thread::sleep(Duration::from_millis(20));
    }
    relay.proc.wait_exit(Duration::from_secs(5));
}

/// Raw heartbeat bodies from a fake signaling endpoint.
fn fake_signaling() -> (SocketAddr, mpsc::Receiver<serde_json::Value>) {
    fake_signaling_with(|tcp| Some(Box::new(tcp)))
}

/// The same over HTTPS, with the certificate and key at `cert`, `key`.
fn fake_https_signaling(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (SocketAddr, mpsc::Receiver<serde_json::Value>) {
    use tokio_rustls::rustls::{ServerConnection, StreamOwned};
    let config = edge_relay::server::tls::server_config(cert, key).unwrap();
    fake_signaling_with(move |tcp| {
        let tls = ServerConnection::new(config.clone()).ok()?;
        Some(Box::new(StreamOwned::new(tls, tcp)))
    })
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A fake signaling endpoint over whatever `wrap` makes of each accepted
/// connection (`None`: drop it).
fn fake_signaling_with(
    wrap: impl Fn(std::net::TcpStream) -> Option<Box<dyn Stream>> + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let Some(conn) = wrap(conn) else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                        return;
                    }
                    let w = r.get_mut();
                    if w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err()
                        || w.flush().is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Heartbeats go over HTTPS, verified against the system's roots and
/// `--signaling-ca`; a relay that does not trust the edge's certificate
/// sends it nothing. Each run's heartbeats carry its boot.
#[test]
fn heartbeats_go_over_https_to_an_edge_the_relay_trusts() {
    let dir = tmpdir("https-signaling");
    let (cert, key) = (dir.join("edge-cert.pem"), dir.join("edge-key.pem"));
    edge_relay::server::tls::ensure_self_signed(&cert, &key, &["127.0.0.1".into()]).unwrap();
    let (signaling, heartbeats) = fake_https_signaling(&cert, &key);
    let url = format!("https://{signaling}");
    let untrusting = start_relay(
        "https-untrusting",
        &["--signaling", &url, "--heartbeat-ms", "50"],
    );
    assert!(
        heartbeats.recv_timeout(Duration::from_secs(2)).is_err(),
        "a heartbeat reached an edge whose certificate the relay does not trust"
    );
    drop(untrusting);
    let _relay = start_relay(
        "https-trusting",
        &[
            "--signaling",
            &url,
            "--signaling-ca",
            cert.to_str().unwrap(),
            "--heartbeat-ms",
            "50",
        ],
    );
    let hb = heartbeats
        .recv_timeout(Duration::from_secs(5))
        .expect("a heartbeat over HTTPS");
    assert_eq!(hb["state"], "active", "{hb}");
    assert!(hb["boot"].as_str().is_some_and(|b| !b.is_empty()), "{hb}");
}

#[test]
fn heartbeats_list_udp_tcp_tls_listeners_cpu_and_drain_state() {
    let (signaling, heartbeats) = fake_signaling();
    let mut relay = start_relay(
        "heartbeats",
        &[
            "--signaling",
            &format!("http://{signaling}"),
            "--heartbeat-ms",
            "50",
            "--drain-ms",
            "10000",
        ],
    );
    let hb = heartbeats.recv_timeout(Duration::from_secs(5)).unwrap();
    let listeners: Vec<(String, String)> = hb["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["transport"].as_str().unwrap().to_owned(),
                l["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listeners,
        [
            ("udp".into(), relay.udp.to_string()),
            ("tcp".into(), relay.tcp.to_string()),
            ("tls".into(), relay.tls.to_string()),
        ]
    );
    assert!(hb["load"]["cpu_percent"].as_f64().is_some(), "{hb}");
    assert_eq!(hb["state"], "active");
    relay.proc.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while heartbeats.recv_timeout(Duration::from_secs(1)).unwrap()["state"] != "draining" {
        assert!(Instant::now() < deadline, "no draining heartbeat");
    }
    // No allocations: exits as soon as signaling has been told, long before
    // the 10 s deadline.
    let took = relay.proc.wait_exit(Duration::from_secs(8));
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// SIGTERM in the middle of two live streams (client -> peer and back, one
/// packet every 5 ms each way): every packet sent before the drain deadline
/// arrives; new Allocates are redirected (300) meanwhile.
#[test]
fn sigterm_drain_loses_no_packets_before_the_deadline() {
    let alternate = "127.0.0.1:3999";
    let mut relay = start_relay("drain", &["--drain-ms", "4000", "--alternate", alternate]);
    let (peer, peer_addr) = udp_peer();
    let mut c = Client::new(Wire::udp(relay.udp), "drainee");
    let relayed = c.allocate_and_bind(peer_addr);
    let Wire::Udp(sock, server) = &c.wire else {
        unreachable!()
    };
    let (sock, server) = (sock.try_clone().unwrap(), *server);
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (to_peer, to_client) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let recv_counter = |s: UdpSocket, n: Arc<AtomicU64>, stop: Arc<AtomicBool>| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if s.recv_from(&mut buf).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let r1 = recv_counter(peer.try_clone().unwrap(), to_peer.clone(), stop.clone());
    let r2 = recv_counter(sock.try_clone().unwrap(), to_client.clone(), stop.clone());

    let start = Instant::now();
    let mut sent = 0u64;
    let mut signalled = None;
    let payload = channel_data(&[0x55; 160]);
    // Stream for 0.5 s, SIGTERM, keep streaming until 2 s into the 4 s
    // drain (well before the deadline).
    while start.elapsed() < Duration::from_millis(2500) {
        sock.send_to(&payload, server).unwrap();
        peer.send_to(&[0xAA; 160], relayed).unwrap();
        sent += 1;
        if signalled.is_none() && start.elapsed() >= Duration::from_millis(500) {
            relay.proc.signal("-TERM");
            signalled = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // A new client during the drain is sent elsewhere.
    let mut late = Client::new(Wire::udp(relay.udp), "late");
    let answer = late.request(Method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&answer), Some(300));
    let m = Message::parse(&answer).unwrap();
    assert_eq!(
        attr::decode_address(m.get(attr::ALTERNATE_SERVER).unwrap()),
        Some(alternate.parse().unwrap())
    );
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    r1.join().unwrap();
    r2.join().unwrap();
    let since_term = signalled.unwrap().elapsed();
    assert!(since_term < Duration::from_millis(4000), "{since_term:?}");
    assert!(relay.proc.0.try_wait().unwrap().is_none(), "still draining");
    assert_eq!(to_peer.load(Ordering::Relaxed), sent, "client -> peer");
    assert_eq!(to_client.load(Ordering::Relaxed), sent, "peer -> client");
    relay.proc.wait_exit(Duration::from_secs(5));
}

/// The very first Allocate after `POST /drain` (no traffic in between) is
/// already redirected, and the 401 leg in front of it is still answered.
#[test]
fn first_allocate_after_admin_drain_is_redirected() {
    let relay = start_relay(
        "first-after-drain",
        &["--alternate", "127.0.0.1:3999", "--drain-ms", "3000"],
    );
    // An existing allocation keeps the draining relay up (with none it
    // would exit at once).
    let (_peer, peer_addr) = udp_peer();
    let mut existing = Client::new(Wire::udp(relay.udp), "existing");
    existing.allocate_and_bind(peer_addr);
    let mut c = Client::new(Wire::udp(relay.udp), "first");
    assert_eq!(http(relay.admin, "POST", "/drain").unwrap().0, 202);
    let answer = c.request(Method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&answer), Some(300));
}

/// --relay-ip6: an IPv4 client asks for an IPv6 relayed address
/// (REQUESTED-ADDRESS-FAMILY) and relays to an IPv6 peer on ::1.
#[test]
fn ipv6_relayed_address_with_relay_ip6() {
    let relay = start_relay("ipv6", &["--relay-ip6", "::1", "--allow-peer", "::1/128"]);
    let peer = UdpSocket::bind("[::1]:0").expect("IPv6 loopback");
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut c = Client::new(Wire::udp(relay.udp), "six");
    let answer = c.request(Method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    let m = Message::parse(&answer).unwrap();
    assert_eq!(m.class, Class::Success, "{:?}", code(&answer));
    let relayed =
        attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &m.transaction_id)
            .unwrap();
    assert_eq!(relayed.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
    let answer = c.request(Method::CHANNEL_BIND, |b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
            .xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
    });
    assert_eq!(code(&answer), None);
    c.wire.send(&channel_data(b"six"));
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"six"[..], relayed));
    peer.send_to(b"back", relayed).unwrap();
    assert_eq!(c.wire.recv(), channel_data(b"back"));
    // An IPv4 peer on an IPv6 allocation: 443.
    let answer = c.request(Method::CREATE_PERMISSION, |b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, "127.0.0.1:9".parse().unwrap());
    });
    assert_eq!(code(&answer), Some(443));
    // IPv6 addresses that reach an IPv4 host through a translator or a
    // tunnel are judged by the IPv4 address they carry, and the deprecated
    // and local-use ranges are no peers: all 403.
    for peer in [
        "[64:ff9b::7f00:1]:9",           // NAT64 of 127.0.0.1
        "[64:ff9b::a9fe:a9fe]:80",       // NAT64 of the metadata address
        "[2002:a00:1::1]:9",             // 6to4 of 10.0.0.1
        "[2001:0:808:808::80ff:fefe]:9", // Teredo, client 127.0.1.1
        "[::7f00:1]:9",                  // IPv4-compatible 127.0.0.1
        "[64:ff9b:1::1]:9",              // local-use NAT64
        "[fec0::1]:9",                   // site-local
    ] {
        let answer = c.request(Method::CREATE_PERMISSION, |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer.parse().unwrap());
        });
        assert_eq!(code(&answer), Some(403), "{peer}");
    }
}

/// Secret rotation through the environment: credentials from
/// TERN_RELAY_PREVIOUS_SECRET still work, unknown secrets do not.
#[test]
fn previous_secret_from_the_environment_is_accepted() {
    let relay = start_relay_env(
        "rotation",
        &[],
        &[(
            "TERN_RELAY_PREVIOUS_SECRET",
            "the-old-one-of-at-least-thirty-two-bytes",
        )],
    );
    let (_peer, peer_addr) = udp_peer();
    let mut old = Client::with_secret(
        Wire::udp(relay.udp),
        "old",
        "the-old-one-of-at-least-thirty-two-bytes",
    );
    old.allocate_and_bind(peer_addr);
    let mut current = Client::new(Wire::udp(relay.udp), "current");
    current.allocate_and_bind(peer_addr);
    let mut stranger = Client::with_secret(Wire::udp(relay.udp), "eve", "not-ours");
    let answer = stranger.request(Method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&answer), Some(401));
    let (_, metrics) = http(relay.admin, "GET", "/metrics").unwrap();
    assert!(
        metrics.contains("tern_relay_auth_total{outcome=\"rejected\"} 1"),
        "{metrics}"
    );
}

/// With an admin token, /metrics and /drain need it and /healthz does not;
/// one address gets at most --max-connections-per-ip TCP/TLS connections
/// (over both listeners), refusals are counted, and a closed connection
/// gives its place back.
#[test]
fn admin_token_and_connections_per_ip() {
    // The token comes from the environment, as a unit file would give it.
    let relay = start_relay_env(
        "admin-token",
        &["--max-connections-per-ip", "2"],
        &[("TERN_RELAY_ADMIN_TOKEN", "s3cret")],
    );
    let admin = relay.admin;
    assert_eq!(http(admin, "GET", "/healthz").unwrap().0, 200);
    assert_eq!(http(admin, "GET", "/metrics").unwrap().0, 401);
    assert_eq!(
        http_as(admin, "GET", "/metrics", Some("wrong!")).unwrap().0,
        401
    );
    assert_eq!(http(admin, "POST", "/drain").unwrap().0, 401);
    assert_eq!(
        http(admin, "GET", "/healthz").unwrap().0,
        200,
        "not drained"
    );

    // Two connections (one TCP, one TLS) are served; a third is closed.
    let mut first = Client::new(Wire::tcp(relay.tcp), "tcp-1");
    let mut second = Client::new(Wire::tls(relay.tls, &relay.cert), "tls-2");
    for c in [&mut first, &mut second] {
        c.wire
            .send(&MessageBuilder::new(Method::BINDING, Class::Request, [3; 12]).finish());
        assert_eq!(
            Message::parse(&c.wire.recv()).unwrap().class,
            Class::Success
        );
    }
    // A raw Binding over a fresh TCP connection: answered or not.
    let answered = || {
        let mut c = TcpStream::connect(relay.tcp).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ =
            c.write_all(&MessageBuilder::new(Method::BINDING, Class::Request, [4; 12]).finish());
        let mut buf = [0u8; 64];
        matches!(c.read(&mut buf), Ok(n) if n > 0)
    };
    assert!(
        !answered(),
        "a third connection from one address is closed unanswered"
    );
    let (status, metrics) = http_as(admin, "GET", "/metrics", Some("s3cret")).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("tern_relay_stream_refused_total{reason=\"per_ip\"} 1"),
        "{metrics}"
    );

    // Closing one gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !answered() {
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
    }
    assert_eq!(
        http_as(admin, "POST", "/drain", Some("s3cret")).unwrap().0,
        202
    );
    // Draining: unhealthy, or already gone (with no allocation left to wait
    // for, a drain ends at once).
    assert!(
        matches!(http(admin, "GET", "/healthz"), None | Some((503, _))),
        "a drained relay does not report healthy"
    );
}
