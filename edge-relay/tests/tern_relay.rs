//! End-to-end tests of the real `tern-relay` binary on loopback:
//!
//! * interop with coturn's `turnutils_uclient` (a third-party TURN client),
//!   over channels and over Send/Data indications, asserting 0 % loss;
//! * our own minimal client through the relay to a local UDP peer, both ways;
//! * signed heartbeats to a fake signaling endpoint, and the draining
//!   heartbeat on SIGTERM.
//!
//! coturn (`turnutils_uclient`, `turnutils_peer`) must be installed; the tests
//! fail with a clear message when it is not, rather than silently skipping.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_relay::stun::{attr, Class, Message, MessageBuilder, Method};
use tern_common::credentials;
use tern_common::relay::{Heartbeat, RelayState};

const SECRET: &str = "interop-secret-of-at-least-32-bytes";
const REALM: &str = "tern";

/// Kills the child process it wraps when dropped, so a failing test leaves
/// nothing running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not on PATH: install coturn (Debian: `apt-get install coturn`) to run the TURN interop tests"
    );
}

/// Start tern-relay on a free loopback port and wait until it answers STUN.
fn start_relay(extra: &[&str]) -> (Proc, SocketAddr) {
    let port = free_udp_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tern-relay"))
        .args([
            "--listen",
            &listen.to_string(),
            "--allow-peer",
            "127.0.0.0/8",
        ])
        .args(["--relay-ports", "ephemeral", "--drain-ms", "200"])
        .args(extra)
        .env("TERN_RELAY_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tern-relay");
    let proc = Proc(child);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let req = MessageBuilder::new(Method::BINDING, Class::Request, [1; 12]).finish();
    let mut buf = [0u8; 1500];
    loop {
        assert!(
            Instant::now() < deadline,
            "tern-relay did not come up on {listen}"
        );
        sock.send_to(&req, listen).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = Message::parse(&buf[..n]).unwrap();
            assert_eq!(m.class, Class::Success);
            return (proc, listen);
        }
    }
}

/// Run turnutils_uclient against a fresh relay and a turnutils_peer echo
/// server and return its output after checking it reports 0 % loss with
/// every message received.
fn run_uclient(uclient_flags: &[&str]) -> String {
    require("turnutils_peer");
    // turnutils_uclient picks channel numbers from RFC 5766's wider range.
    let (_relay, listen) = start_relay(&["--rfc5766-channels"]);
    let peer_port = free_udp_port();
    let _peer = Proc(
        Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnutils_peer"),
    );
    std::thread::sleep(Duration::from_millis(200));
    let peer_port = peer_port.to_string();
    let flags = [&["-e", "127.0.0.1", "-r", &peer_port][..], uclient_flags].concat();
    uclient_against(listen, &flags)
}

/// turnutils_uclient (two clients, 50 messages each) against `listen`: its
/// output, after checking it lost nothing and got every message back.
fn uclient_against(listen: SocketAddr, uclient_flags: &[&str]) -> String {
    require("turnutils_uclient");
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-p", &listen.port().to_string()])
        .args(["-n", "50", "-m", "2", "-z", "5"])
        .args(uclient_flags)
        .arg("127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn turnutils_uclient");
    let out = wait_output(child, Duration::from_secs(60));
    let lost = out
        .lines()
        .find_map(|l| {
            let rest = l.split("Total lost packets ").nth(1)?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .unwrap_or_else(|| panic!("no loss summary in turnutils_uclient output:\n{out}"));
    assert_eq!(lost, 0, "turnutils_uclient lost packets:\n{out}");
    // 2 clients x 50 messages each way.
    assert!(
        out.contains("tot_send_msgs=100, tot_recv_msgs=100"),
        "not every message came back:\n{out}"
    );
    out
}

/// Wait for a child with a timeout; its stdout and stderr together.
fn wait_output(child: Child, timeout: Duration) -> String {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(o)) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        }
        Ok(Err(e)) => panic!("waiting for child: {e}"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("child {pid} timed out after {timeout:?}");
        }
    }
}

#[test]
fn coturn_uclient_over_channels() {
    // REST credentials computed by uclient itself from the shared secret
    // (coturn's use-auth-secret scheme).
    run_uclient(&["-c", "-u", "uclient", "-W", SECRET]);
}

#[test]
fn coturn_uclient_over_send_and_data_indications() {
    // Credentials minted by tern-common, as signaling hands them out.
    let expiry = unix_now() + 3600;
    let c = credentials::mint(SECRET.as_bytes(), "uclient", expiry);
    run_uclient(&["-c", "-s", "-u", &c.username, "-w", &c.credential]);
}

/// coturn's client in client-to-client mode (`-y`): each client's peer is
/// the other client's relayed address on the same relay, which is the shape
/// of every Tern call (signaling puts a room on one relay). The relay hands
/// that media over in memory; with `--no-local-delivery` it goes through
/// the kernel as with other TURN servers. Both lose nothing.
#[test]
fn coturn_uclient_client_to_client_in_memory_and_through_the_kernel() {
    for (flags, in_memory) in [(&[][..], true), (&["--no-local-delivery"][..], false)] {
        let admin = format!("127.0.0.1:{}", free_tcp_port());
        let relay_flags = [
            &["--rfc5766-channels", "--threads", "1", "--admin", &admin][..],
            flags,
        ]
        .concat();
        let (_relay, listen) = start_relay(&relay_flags);
        uclient_against(listen, &["-y", "-c", "-u", "uclient", "-W", SECRET]);
        let admin: SocketAddr = admin.parse().unwrap();
        let relayed = metric(admin, "tern_relay_relayed_packets_total");
        let local = metric(admin, "tern_relay_local_deliveries_total");
        // 100 messages, each counted leaving one allocation and entering
        // the other.
        assert!(relayed >= 200, "{flags:?}: relayed {relayed}");
        if in_memory {
            assert_eq!(
                local * 2,
                relayed,
                "every relayed message crossed in memory"
            );
        } else {
            assert_eq!(local, 0, "{flags:?}: nothing in memory");
        }
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One unlabelled sample from the relay's /metrics.
fn metric(admin: SocketAddr, name: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(admin).expect("admin listener");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}")) as u64
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A minimal TURN client over a blocking UDP socket.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
    tid: u8,
}

impl Client {
    fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let c = credentials::mint(SECRET.as_bytes(), "rust-client", unix_now() + 600);
        Client {
            sock,
            server,
            key: edge_relay::auth::long_term_key(&c.username, REALM, &c.credential),
            username: c.username,
            nonce: Vec::new(),
            tid: 0,
        }
    }

    fn recv(&self) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let (n, from) = self.sock.recv_from(&mut buf).expect("answer from relay");
        assert_eq!(from, self.server);
        buf[..n].to_vec()
    }

    /// Signed request; returns the answer (after one 401/438 round if needed).
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
            self.sock.send_to(&b.finish(), self.server).unwrap();
            let answer = self.recv();
            let m = Message::parse(&answer).unwrap();
            let code = m.get(attr::ERROR_CODE).and_then(attr::decode_error_code);
            if matches!(code, Some(401 | 438)) && m.get(attr::NONCE).is_some() {
                self.nonce = m.get(attr::NONCE).unwrap().to_vec();
                continue;
            }
            return answer;
        }
        panic!("authentication did not converge");
    }
}

fn error_code(bytes: &[u8]) -> Option<u16> {
    let m = Message::parse(bytes).unwrap();
    m.get(attr::ERROR_CODE).and_then(attr::decode_error_code)
}

#[test]
fn own_client_relays_through_binary_both_ways() {
    let (_relay, listen) = start_relay(&[]);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut c = Client::new(listen);

    let answer = c.request(Method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let m = Message::parse(&answer).unwrap();
    assert_eq!(
        m.class,
        Class::Success,
        "allocate: {:?}",
        error_code(&answer)
    );
    assert!(m.verify_integrity(&c.key));
    let relayed =
        attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &m.transaction_id)
            .unwrap();

    // Policy: private peers are refused even with loopback allowed.
    let answer = c.request(Method::CREATE_PERMISSION, |b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.1:9".parse().unwrap());
    });
    assert_eq!(error_code(&answer), Some(403));

    let answer = c.request(Method::CREATE_PERMISSION, |b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
    });
    assert_eq!(error_code(&answer), None);

    // Send indication -> peer; peer -> Data indication.
    let mut b = MessageBuilder::new(Method::SEND, Class::Indication, [99; 12]);
    b.xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
        .attr(attr::DATA, b"ping");
    c.sock.send_to(&b.finish(), listen).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = peer.recv_from(&mut buf).expect("peer gets the data");
    assert_eq!((&buf[..n], from), (&b"ping"[..], relayed));
    peer.send_to(b"pong", relayed).unwrap();
    let data = c.recv();
    let m = Message::parse(&data).unwrap();
    assert_eq!((m.method, m.class), (Method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"pong"[..]));

    // ChannelBind, then ChannelData both ways.
    let answer = c.request(Method::CHANNEL_BIND, |b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x10, 0, 0])
            .xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
    });
    assert_eq!(error_code(&answer), None);
    c.sock
        .send_to(
            &[0x40, 0x10, 0, 5, b'v', b'o', b'i', b'c', b'e', 0, 0, 0],
            listen,
        )
        .unwrap();
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"voice"[..], relayed));
    peer.send_to(b"echo!", relayed).unwrap();
    assert_eq!(c.recv(), [&[0x40, 0x10, 0, 5][..], b"echo!"].concat());

    // Delete the allocation; the relayed port stops relaying.
    let answer = c.request(Method::REFRESH, |b| {
        b.u32(attr::LIFETIME, 0);
    });
    assert_eq!(error_code(&answer), None);
    let answer = c.request(Method::REFRESH, |_| {});
    assert_eq!(error_code(&answer), Some(437));
}

/// A fake signaling endpoint: accepts HTTP/1.1 POSTs (keep-alive), verifies
/// each heartbeat's signature and hands it to the test.
fn fake_signaling() -> (SocketAddr, mpsc::Receiver<Heartbeat>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve_conn(conn, tx));
        }
    });
    (addr, rx)
}

fn serve_conn(conn: std::net::TcpStream, tx: mpsc::Sender<Heartbeat>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0;
        let mut sig = String::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "x-tern-signature" => sig = v.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        assert!(
            request_line.starts_with("POST /v1/relays/heartbeat "),
            "{request_line}"
        );
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let status = match tern_common::relay::verify(SECRET.as_bytes(), &body, &sig, now_ms) {
            Ok(hb) => {
                let _ = tx.send(hb);
                "204 No Content"
            }
            Err(_) => "401 Unauthorized",
        };
        let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn heartbeats_are_signed_and_announce_draining_on_sigterm() {
    let (signaling, heartbeats) = fake_signaling();
    let url = format!("http://{signaling}");
    let (mut relay, listen) = start_relay(&[
        "--signaling",
        &url,
        "--heartbeat-ms",
        "50",
        "--id",
        "relay-under-test",
        "--region",
        "test-region",
    ]);
    let first = heartbeats
        .recv_timeout(Duration::from_secs(5))
        .expect("a heartbeat");
    let second = heartbeats
        .recv_timeout(Duration::from_secs(5))
        .expect("another");
    assert_eq!(first.id, "relay-under-test");
    assert_eq!(first.region, "test-region");
    assert_eq!(first.state, RelayState::Active);
    assert_eq!(first.listeners[0].transport, "udp");
    assert_eq!(first.listeners[0].address, listen.to_string());
    assert!(second.seq > first.seq);

    let pid = relay.0.id();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut saw_draining = false;
    while Instant::now() < deadline && !saw_draining {
        if let Ok(hb) = heartbeats.recv_timeout(Duration::from_millis(200)) {
            saw_draining = hb.state == RelayState::Draining;
        }
    }
    assert!(saw_draining, "no draining heartbeat after SIGTERM");
    // Exits on its own after --drain-ms.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = relay.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "relay did not exit after drain");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn allocate(c: &mut Client) -> Result<SocketAddr, Option<u16>> {
    let answer = c.request(Method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let m = Message::parse(&answer).unwrap();
    if m.class != Class::Success {
        return Err(error_code(&answer));
    }
    Ok(
        attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &m.transaction_id)
            .unwrap(),
    )
}

/// With several datapath threads the kernel spreads clients over them by
/// source port; quotas must still be per process, and media must cross from
/// one thread's relayed socket to another's.
#[test]
fn multi_threaded_relay_shares_quotas_and_relays_across_threads() {
    let (_relay, listen) = start_relay(&["--threads", "4", "--max-allocations-per-user", "5"]);
    // Six clients of one user over four threads: all on one thread has a
    // probability of 4/4^6 (0.1 %), and the quota holds either way.
    let mut clients: Vec<Client> = (0..6).map(|_| Client::new(listen)).collect();
    let relayed: Vec<SocketAddr> = clients[..5]
        .iter_mut()
        .map(|c| allocate(c).expect("within the quota"))
        .collect();
    assert_eq!(
        allocate(&mut clients[5]),
        Err(Some(486)),
        "sixth is over the per-user quota"
    );

    // Freeing one makes room again, whichever thread held it.
    let answer = clients[0].request(Method::REFRESH, |b| {
        b.u32(attr::LIFETIME, 0);
    });
    assert_eq!(error_code(&answer), None);
    allocate(&mut clients[5]).expect("a released allocation frees quota");

    // Every ordered pair of the remaining clients exchanges a Send
    // indication through their relayed addresses.
    for (i, c) in clients.iter_mut().enumerate().take(5).skip(1) {
        for (j, &peer) in relayed.iter().enumerate().skip(1) {
            if i != j {
                let answer = c.request(Method::CREATE_PERMISSION, |b| {
                    b.xor_address(attr::XOR_PEER_ADDRESS, peer);
                });
                assert_eq!(error_code(&answer), None);
            }
        }
    }
    let pairs = (1..5).flat_map(|i| (1..5).map(move |j| (i, j)));
    for (i, j) in pairs.filter(|(i, j)| i != j) {
        let payload = format!("{i}->{j}");
        let mut b = MessageBuilder::new(Method::SEND, Class::Indication, [i as u8; 12]);
        b.xor_address(attr::XOR_PEER_ADDRESS, relayed[j])
            .attr(attr::DATA, payload.as_bytes());
        clients[i].sock.send_to(&b.finish(), listen).unwrap();
        let data = clients[j].recv();
        let m = Message::parse(&data).unwrap();
        assert_eq!((m.method, m.class), (Method::DATA, Class::Indication));
        assert_eq!(m.get(attr::DATA), Some(payload.as_bytes()));
        let from =
            attr::decode_xor_address(m.get(attr::XOR_PEER_ADDRESS).unwrap(), &m.transaction_id);
        assert_eq!(from, Some(relayed[i]));
    }
}

/// With several signaling edges, a dead edge (refuses) and a hung edge
/// (accepts, never answers) cost at most one interval: every heartbeat still
/// reaches the live edge, and the relay stays with it.
#[test]
fn heartbeats_fail_over_between_signaling_edges() {
    let (live, heartbeats) = fake_signaling();
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap() // dropped: nothing listens there now
    };
    // The hung edge accepts and holds connections, answering nothing, and
    // counts them: a relay that stays with the live edge connects once.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap();
    let hung_conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let count = hung_conns.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in hung.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(c);
            }
        });
    }
    let urls = format!("http://{refused},http://{hung_addr},http://{live}");
    let (_relay, _) = start_relay(&["--signaling", &urls, "--heartbeat-ms", "100"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seqs = Vec::new();
    while seqs.len() < 12 && Instant::now() < deadline {
        if let Ok(hb) = heartbeats.recv_timeout(Duration::from_millis(500)) {
            seqs.push(hb.seq);
        }
    }
    assert_eq!(
        seqs.first(),
        Some(&1),
        "the first heartbeat got through: {seqs:?}"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no heartbeat lost on the way: {seqs:?}"
    );
    assert_eq!(seqs.len(), 12, "heartbeats keep coming: {seqs:?}");
    // Not sticky, every heartbeat would try the hung edge first. (A live
    // edge slowed past the interval by a loaded machine can send the relay
    // round once more; that is the design, not a failure.)
    let tried_hung = hung_conns.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        tried_hung >= 1 && tried_hung * 3 <= seqs.len(),
        "the relay stayed with the live edge: {tried_hung} connections to the hung one for {} heartbeats",
        seqs.len()
    );
}

/// A client must not reach the relay's own listener through its allocation:
/// a STUN request sent there from the relayed address would be answered
/// (and could allocate again, hiding the client behind the relay). Loopback
/// is allowed as a peer here, so only the own-listener rule stands between.
/// Permissions and channels per allocation are capped.
#[test]
fn the_relays_own_listener_is_no_peer_and_permissions_are_capped() {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let (_relay, listen) = start_relay(&[
        "--admin",
        &admin.to_string(),
        "--max-permissions",
        "2",
        "--max-channels",
        "1",
    ]);
    let mut c = Client::new(listen);
    let relayed = allocate(&mut c).expect("allocate");
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let answer = c.request(Method::CREATE_PERMISSION, |b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, peer.local_addr().unwrap());
    });
    assert_eq!(error_code(&answer), None, "a permission for 127.0.0.1");

    let send = |c: &Client, to: SocketAddr, data: &[u8]| {
        let mut b = MessageBuilder::new(Method::SEND, Class::Indication, [7; 12]);
        b.xor_address(attr::XOR_PEER_ADDRESS, to)
            .attr(attr::DATA, data);
        c.sock.send_to(&b.finish(), listen).unwrap();
    };
    // Control: the same Send to an ordinary loopback peer gets there.
    let binding = MessageBuilder::new(Method::BINDING, Class::Request, [9; 12]).finish();
    send(&c, peer.local_addr().unwrap(), &binding);
    let mut buf = [0u8; 2048];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer gets the Send");
    assert_eq!((&buf[..n], from), (&binding[..], relayed));

    // To the listener: dropped, so no Binding answer comes back as Data.
    send(&c, listen, &binding);
    c.sock
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 2048];
    if let Ok((n, _)) = c.sock.recv_from(&mut buf) {
        panic!(
            "the relay relayed to its own listener and answered: {:?}",
            Message::parse(&buf[..n]).map(|m| (m.method, m.class))
        );
    }
    c.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(
        metric(admin, "tern_relay_dropped_total{reason=\"own_address\"}"),
        1
    );
    let answer = c.request(Method::CHANNEL_BIND, |b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
            .xor_address(attr::XOR_PEER_ADDRESS, listen);
    });
    assert_eq!(error_code(&answer), Some(403), "a channel to the listener");

    // Caps: a second address fits, a third does not; one channel only.
    let permit = |c: &mut Client, ip: &str| {
        let peer: SocketAddr = format!("{ip}:9").parse().unwrap();
        error_code(&c.request(Method::CREATE_PERMISSION, |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        }))
    };
    assert_eq!(permit(&mut c, "127.0.0.2"), None);
    assert_eq!(permit(&mut c, "127.0.0.3"), Some(508));
    let bind = |c: &mut Client, number: u8, peer: SocketAddr| {
        error_code(&c.request(Method::CHANNEL_BIND, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, number, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        }))
    };
    assert_eq!(bind(&mut c, 1, peer.local_addr().unwrap()), None);
    assert_eq!(bind(&mut c, 2, "127.0.0.2:9".parse().unwrap()), Some(508));
    assert_eq!(
        metric(admin, "tern_relay_quota_hits_total{quota=\"permissions\"}"),
        1
    );
    assert_eq!(
        metric(admin, "tern_relay_quota_hits_total{quota=\"channels\"}"),
        1
    );
}
