//! Where events go besides standard output: an MQTT broker, a webhook, a command.
//!
//! The processing thread never waits on a sink. [`Sinks::send`] hands each event's JSON line
//! (exactly the line written on standard output) to one thread per enabled sink through a
//! bounded queue and returns at once. A sink thread delivers the events in order, one at a
//! time; when a delivery fails (broker down, HTTP error, the command failing or hanging) it
//! says so on standard error, keeps the event, and tries again after the `[reconnect]`
//! back-off (`initial_backoff`, doubling up to `max_backoff`), while the events detected
//! meanwhile wait in its queue (`sinks.queue` events). An event that does not fit in a full
//! queue is counted and written whole to standard error, so that it is never silently lost.
//! [`Sinks::close`] lets every sink deliver what it holds, for at most `sinks.flush_timeout`
//! seconds, and reports what could not be delivered.
//!
//! The clients are small and written here, over `std::net::TcpStream`, with no dependency:
//! MQTT 3.1.1 (CONNECT, PUBLISH at QoS 0, 1 or 2, PINGREQ to keep an idle connection alive;
//! QoS 1 and 2 publications are re-sent after a reconnection until acknowledged, so a
//! subscriber may see a QoS 1 event twice, never none) and HTTP/1.1 `POST` (plain `http://`;
//! `https://` is refused when the sinks start, put a TLS-terminating relay in front).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{CommandConfig, MqttConfig, ReconnectConfig, SinksConfig, WebhookConfig};

/// Why the sinks cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A sink's settings cannot be used.
    #[error("{field}: {problem}")]
    Config {
        /// The dotted configuration field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The sink thread could not be started.
    #[error("cannot start the {name} sink thread: {source}")]
    Thread {
        /// The sink.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// One sink's account, from [`Sinks::close`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// The sink, as in its messages (`mqtt://host:port/topic`, the URL, the program).
    pub name: String,
    /// Events delivered.
    pub delivered: u64,
    /// Events that did not fit in the full queue (each was written to standard error).
    pub dropped: u64,
    /// Events still undelivered when the flush timeout ran out at exit (each was written to
    /// standard error).
    pub undelivered: u64,
    /// Failed delivery attempts (each was reported on standard error).
    pub failures: u64,
}

impl SinkReport {
    /// Every event reached the sink.
    pub fn complete(&self) -> bool {
        self.dropped == 0 && self.undelivered == 0
    }
}

/// A destination for event lines, driven by its own thread.
trait Sink: Send {
    /// The sink, for messages.
    fn name(&self) -> String;
    /// Delivers one event line (without its newline). Must give up within bounded time.
    fn deliver(&mut self, line: &str) -> Result<(), String>;
    /// How often [`Sink::idle`] wants to run while no event comes; `None` for never.
    fn idle_every(&self) -> Option<Duration> {
        None
    }
    /// Keeps a connection up (or opens it) while no event comes.
    fn idle(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Set once, by [`Sinks::close`]: from then on a failing sink gives up at this instant.
type Deadline = Arc<OnceLock<Instant>>;

struct Lane {
    name: String,
    tx: Option<SyncSender<Arc<str>>>,
    dropped: u64,
    thread: Option<JoinHandle<SinkReport>>,
}

/// The running sinks of one `hark` process.
pub struct Sinks {
    lanes: Vec<Lane>,
    capacity: usize,
    flush_timeout: Duration,
    deadline: Deadline,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks")
            .field(
                "sinks",
                &self.lanes.iter().map(|l| &l.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Sinks {
    /// Starts a thread for every enabled sink of `cfg` (standard output is not one of them:
    /// the caller writes it). Nothing is connected yet when this returns; a broker that is
    /// down is reported by its thread, not here.
    pub fn start(cfg: &SinksConfig, reconnect: &ReconnectConfig) -> Result<Self, SinkError> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if cfg.mqtt.enabled {
            sinks.push(Box::new(MqttSink::new(&cfg.mqtt)));
        }
        if cfg.webhook.enabled {
            sinks.push(Box::new(WebhookSink::new(&cfg.webhook)?));
        }
        if cfg.command.enabled {
            sinks.push(Box::new(CommandSink::new(&cfg.command)));
        }
        let deadline: Deadline = Arc::new(OnceLock::new());
        let backoff = Backoff {
            initial: Duration::from_secs_f64(reconnect.initial_backoff),
            max: Duration::from_secs_f64(reconnect.max_backoff),
        };
        let mut lanes = Vec::new();
        for sink in sinks {
            let name = sink.name();
            let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<str>>(cfg.queue);
            let deadline = deadline.clone();
            let thread = std::thread::Builder::new()
                .name(format!("hark-sink-{}", lanes.len()))
                .spawn(move || run_sink(sink, rx, backoff, deadline))
                .map_err(|source| SinkError::Thread {
                    name: name.clone(),
                    source,
                })?;
            lanes.push(Lane {
                name,
                tx: Some(tx),
                dropped: 0,
                thread: Some(thread),
            });
        }
        Ok(Self {
            lanes,
            capacity: cfg.queue,
            flush_timeout: Duration::from_secs_f64(cfg.flush_timeout),
            deadline,
        })
    }

    /// No sink is enabled.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// The enabled sinks' names.
    pub fn names(&self) -> Vec<&str> {
        self.lanes.iter().map(|l| l.name.as_str()).collect()
    }

    /// Queues one event line (the JSON object, without newline) for every sink; never
    /// blocks. A full queue drops the event for that sink, counts it and writes it to
    /// standard error.
    pub fn send(&mut self, line: &str) {
        if self.lanes.is_empty() {
            return;
        }
        let line: Arc<str> = Arc::from(line);
        for lane in &mut self.lanes {
            let Some(tx) = &lane.tx else { continue };
            let why = match tx.try_send(line.clone()) {
                Ok(()) => continue,
                Err(TrySendError::Full(_)) => format!("queue full ({} events)", self.capacity),
                Err(TrySendError::Disconnected(_)) => "its thread has stopped".to_string(),
            };
            lane.dropped += 1;
            eprintln!(
                "hark: sink {}: EVENT DROPPED ({why}; {} dropped so far): {line}",
                lane.name, lane.dropped
            );
        }
    }

    /// Stops taking events and waits for every sink to deliver what it holds, for at most
    /// the flush timeout (a sink that is up delivers everything; one that is failing gives
    /// up at the timeout and writes each event it still holds to standard error). One report
    /// per sink; a summary line per sink goes to standard error.
    pub fn close(mut self) -> Vec<SinkReport> {
        let _ = self.deadline.set(Instant::now() + self.flush_timeout);
        for lane in &mut self.lanes {
            lane.tx = None;
        }
        let mut reports = Vec::new();
        for lane in &mut self.lanes {
            let mut report = match lane.thread.take().map(JoinHandle::join) {
                Some(Ok(r)) => r,
                _ => SinkReport {
                    name: lane.name.clone(),
                    ..SinkReport::default()
                },
            };
            report.dropped += lane.dropped;
            eprintln!(
                "hark: sink {}: {} event(s) delivered{}",
                report.name,
                report.delivered,
                if report.complete() {
                    String::new()
                } else {
                    format!(
                        ", {} EVENT(S) LOST ({} dropped on a full queue, {} undelivered at exit; all written above)",
                        report.dropped + report.undelivered,
                        report.dropped,
                        report.undelivered
                    )
                }
            );
            reports.push(report);
        }
        reports
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        // Dropped without close (an early error): let the threads go without waiting.
        let _ = self.deadline.set(Instant::now());
    }
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
}

/// Sleeps `d`, or less if the deadline is or becomes set to an earlier instant; returns
/// false when the deadline has passed.
fn sleep_until_retry(d: Duration, deadline: &Deadline) -> bool {
    let until = Instant::now() + d;
    loop {
        let now = Instant::now();
        if deadline.get().is_some_and(|t| now >= *t) {
            return false;
        }
        if now >= until {
            return true;
        }
        let step = (until - now).min(Duration::from_millis(20));
        std::thread::sleep(step);
    }
}

/// The body of a sink's thread.
fn run_sink(
    mut sink: Box<dyn Sink>,
    rx: Receiver<Arc<str>>,
    backoff: Backoff,
    deadline: Deadline,
) -> SinkReport {
    let name = sink.name();
    let mut report = SinkReport {
        name: name.clone(),
        ..SinkReport::default()
    };
    let mut delay = backoff.initial;
    let mut failing = false;
    let mut retry_at: Option<Instant> = None;
    let mut current: Option<Arc<str>> = None;
    let on_failure = |why: String, holding: bool, delay: &mut Duration, failing: &mut bool| {
        eprintln!(
            "hark: sink {name}: {why}; retrying in {:.1} s{}",
            delay.as_secs_f64(),
            if holding {
                " (the event and those after it are kept)"
            } else {
                ""
            }
        );
        *failing = true;
        let at = Instant::now() + *delay;
        *delay = (*delay * 2).min(backoff.max);
        at
    };
    // A connection-oriented sink connects at once, so that a broker that is down is reported
    // before the first event.
    if sink.idle_every().is_some()
        && let Err(why) = sink.idle()
    {
        report.failures += 1;
        retry_at = Some(on_failure(why, false, &mut delay, &mut failing));
    }
    loop {
        let Some(line) = current.clone() else {
            // Wait for an event, waking up to keep the connection alive or to retry it.
            let now = Instant::now();
            let wake = match (retry_at, sink.idle_every()) {
                (Some(t), _) => t.saturating_duration_since(now),
                (None, Some(every)) => every,
                (None, None) => Duration::from_secs(3600),
            };
            match rx.recv_timeout(wake) {
                Ok(l) => current = Some(l),
                Err(RecvTimeoutError::Timeout) => {
                    if sink.idle_every().is_some() {
                        match sink.idle() {
                            Ok(()) => {
                                if failing {
                                    eprintln!("hark: sink {name}: connected again");
                                }
                                failing = false;
                                delay = backoff.initial;
                                retry_at = None;
                            }
                            Err(why) => {
                                report.failures += 1;
                                retry_at = Some(on_failure(why, false, &mut delay, &mut failing));
                            }
                        }
                    } else {
                        retry_at = None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            continue;
        };
        if let Some(t) = retry_at.take()
            && !sleep_until_retry(t.saturating_duration_since(Instant::now()), &deadline)
        {
            give_up(&name, &line, &rx, &mut report);
            break;
        }
        match sink.deliver(&line) {
            Ok(()) => {
                report.delivered += 1;
                current = None;
                if failing {
                    eprintln!("hark: sink {name}: delivering again");
                }
                failing = false;
                delay = backoff.initial;
            }
            Err(why) => {
                report.failures += 1;
                if deadline.get().is_some_and(|t| Instant::now() >= *t) {
                    eprintln!("hark: sink {name}: {why}");
                    give_up(&name, &line, &rx, &mut report);
                    break;
                }
                retry_at = Some(on_failure(why, true, &mut delay, &mut failing));
            }
        }
    }
    report
}

/// The flush timeout ran out with `current` and the queue undelivered: each event goes to
/// standard error, counted.
fn give_up(name: &str, current: &str, rx: &Receiver<Arc<str>>, report: &mut SinkReport) {
    eprintln!("hark: sink {name}: giving up at exit (flush timeout), undelivered events follow");
    report.undelivered += 1;
    eprintln!("hark: sink {name}: EVENT NOT DELIVERED: {current}");
    for line in rx.try_iter() {
        report.undelivered += 1;
        eprintln!("hark: sink {name}: EVENT NOT DELIVERED: {line}");
    }
}

/// Connects to `host:port` trying every address, each within `timeout`.
fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?;
    let mut last = format!("{host}:{port} has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("cannot connect to {host}:{port} ({addr}): {e}"),
        }
    }
    Err(last)
}

// ---------------------------------------------------------------------------------------
// MQTT 3.1.1

/// Time allowed for the broker to answer (CONNACK, PUBACK, ...), and for a write.
const MQTT_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive announced in CONNECT; a PINGREQ goes out after half of it without traffic.
const MQTT_KEEP_ALIVE_S: u16 = 60;

struct MqttSink {
    cfg: MqttConfig,
    conn: Option<TcpStream>,
    next_id: u16,
    last_io: Instant,
}

/// MQTT packet types (high nibble of the fixed header).
mod packet {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
}

/// Appends an MQTT remaining-length varint.
fn put_remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Appends an MQTT UTF-8 string (u16 length, then bytes).
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A whole packet: fixed header byte, remaining length, body.
fn mqtt_packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(header);
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn connack_meaning(rc: u8) -> &'static str {
    match rc {
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorised",
        _ => "unknown return code",
    }
}

impl MqttSink {
    fn new(cfg: &MqttConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            conn: None,
            next_id: 0,
            last_io: Instant::now(),
        }
    }

    fn ensure_connected(&mut self) -> Result<&mut TcpStream, String> {
        if self.conn.is_none() {
            let mut s = connect(&self.cfg.host, self.cfg.port, MQTT_IO_TIMEOUT)?;
            let io = |e: std::io::Error| format!("broker {}:{}: {e}", self.cfg.host, self.cfg.port);
            s.set_read_timeout(Some(MQTT_IO_TIMEOUT)).map_err(io)?;
            s.set_write_timeout(Some(MQTT_IO_TIMEOUT)).map_err(io)?;
            let mut body = Vec::new();
            put_str(&mut body, "MQTT");
            body.push(4); // protocol level 3.1.1
            body.push(0x02); // clean session, no will, no credentials
            body.extend_from_slice(&MQTT_KEEP_ALIVE_S.to_be_bytes());
            put_str(&mut body, &self.cfg.client_id);
            s.write_all(&mqtt_packet(packet::CONNECT << 4, &body))
                .map_err(|e| format!("sending CONNECT: {e}"))?;
            let (kind, body) = read_packet(&mut s).map_err(|e| format!("awaiting CONNACK: {e}"))?;
            if kind >> 4 != packet::CONNACK || body.len() != 2 {
                return Err(format!(
                    "the broker answered CONNECT with packet type {} instead of CONNACK",
                    kind >> 4
                ));
            }
            if body[1] != 0 {
                return Err(format!(
                    "the broker refused the connection: {} (code {})",
                    connack_meaning(body[1]),
                    body[1]
                ));
            }
            self.last_io = Instant::now();
            self.conn = Some(s);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Waits for a packet of type `want` carrying packet identifier `id`, skipping others.
    fn await_ack(s: &mut TcpStream, want: u8, id: u16, what: &str) -> Result<(), String> {
        loop {
            let (kind, body) = read_packet(s).map_err(|e| format!("awaiting {what}: {e}"))?;
            if kind >> 4 == want && body.len() >= 2 && u16::from_be_bytes([body[0], body[1]]) == id
            {
                return Ok(());
            }
        }
    }

    fn publish(&mut self, payload: &str) -> Result<(), String> {
        let (qos, retain) = (self.cfg.qos, self.cfg.retain);
        let id = self.packet_id();
        let mut body = Vec::with_capacity(payload.len() + self.cfg.topic.len() + 4);
        put_str(&mut body, &self.cfg.topic);
        if qos > 0 {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend_from_slice(payload.as_bytes());
        let header = (packet::PUBLISH << 4) | (qos << 1) | u8::from(retain);
        let bytes = mqtt_packet(header, &body);
        let s = self.ensure_connected()?;
        s.write_all(&bytes)
            .map_err(|e| format!("sending PUBLISH: {e}"))?;
        match qos {
            0 => {}
            1 => Self::await_ack(s, packet::PUBACK, id, "PUBACK")?,
            _ => {
                Self::await_ack(s, packet::PUBREC, id, "PUBREC")?;
                let mut rel = vec![(packet::PUBREL << 4) | 0x02, 2];
                rel.extend_from_slice(&id.to_be_bytes());
                s.write_all(&rel)
                    .map_err(|e| format!("sending PUBREL: {e}"))?;
                Self::await_ack(s, packet::PUBCOMP, id, "PUBCOMP")?;
            }
        }
        self.last_io = Instant::now();
        Ok(())
    }

    fn ping(&mut self) -> Result<(), String> {
        let s = self.ensure_connected()?;
        s.write_all(&[packet::PINGREQ << 4, 0])
            .map_err(|e| format!("sending PINGREQ: {e}"))?;
        loop {
            let (kind, _) = read_packet(s).map_err(|e| format!("awaiting PINGRESP: {e}"))?;
            if kind >> 4 == packet::PINGRESP {
                break;
            }
        }
        self.last_io = Instant::now();
        Ok(())
    }
}

/// Reads one MQTT packet: the fixed header byte and the body.
fn read_packet(s: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    let kind = b[0];
    let (mut len, mut shift) = (0usize, 0u32);
    loop {
        s.read_exact(&mut b)?;
        len |= ((b[0] & 0x7f) as usize) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "malformed remaining length",
            ));
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((kind, body))
}

impl Sink for MqttSink {
    fn name(&self) -> String {
        format!(
            "mqtt://{}:{}/{}",
            self.cfg.host, self.cfg.port, self.cfg.topic
        )
    }

    fn deliver(&mut self, line: &str) -> Result<(), String> {
        let r = self.publish(line);
        if r.is_err() {
            // Whatever state the connection is in, start afresh next time.
            self.conn = None;
        }
        r
    }

    fn idle_every(&self) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(MQTT_KEEP_ALIVE_S) / 2))
    }

    fn idle(&mut self) -> Result<(), String> {
        let r = if self.conn.is_none() {
            self.ensure_connected().map(|_| ())
        } else if self.last_io.elapsed() >= Duration::from_secs(u64::from(MQTT_KEEP_ALIVE_S) / 2) {
            self.ping()
        } else {
            Ok(())
        };
        if r.is_err() {
            self.conn = None;
        }
        r
    }
}

// ---------------------------------------------------------------------------------------
// Webhook: HTTP/1.1 POST

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpUrl {
    host: String,
    port: u16,
    /// Host header value (host, and port when not 80).
    authority: String,
    /// Path and query, starting with `/`.
    path: String,
}

fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url:?}: https:// is not supported (hark posts plain HTTP; put a local TLS relay in front of an https endpoint)"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(format!("{url:?}: user names in URLs are not supported"));
    }
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        // [v6]:port
        let end = h
            .find(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        let port = match &h[end + 1..] {
            "" => 80,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("{url:?}: bad port"))?,
        };
        (h[..end].to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok(HttpUrl {
        host,
        port,
        authority: authority.to_string(),
        path,
    })
}

struct WebhookSink {
    url: String,
    target: HttpUrl,
    timeout: Duration,
}

impl WebhookSink {
    fn new(cfg: &WebhookConfig) -> Result<Self, SinkError> {
        let target = parse_http_url(&cfg.url).map_err(|problem| SinkError::Config {
            field: "sinks.webhook.url",
            problem,
        })?;
        Ok(Self {
            url: cfg.url.clone(),
            target,
            timeout: Duration::from_secs_f64(cfg.timeout),
        })
    }

    fn post(&self, body: &str) -> Result<(), String> {
        let until = Instant::now() + self.timeout;
        let left = || {
            until
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("no answer within {:.1} s", self.timeout.as_secs_f64()))
        };
        let mut s = connect(&self.target.host, self.target.port, self.timeout)?;
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hark/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.target.path,
            self.target.authority,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        s.set_write_timeout(Some(left()?))
            .and_then(|()| s.write_all(request.as_bytes()))
            .map_err(|e| format!("sending the request: {e}"))?;
        // Read up to the end of the status line.
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            s.set_read_timeout(Some(left()?))
                .map_err(|e| e.to_string())?;
            let n = s.read(&mut buf).map_err(|e| {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    format!("no answer within {:.1} s", self.timeout.as_secs_f64())
                } else {
                    format!("reading the answer: {e}")
                }
            })?;
            if n == 0 {
                return Err("the server closed the connection without an answer".into());
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > 8192 {
                return Err("the answer's status line is too long".into());
            }
        }
        let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
        let status = String::from_utf8_lossy(&head[..line_end]).into_owned();
        let code: Option<u16> = status
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|c| c.parse().ok());
        match code {
            Some(c) if (200..300).contains(&c) => Ok(()),
            Some(_) => Err(format!("the server answered {status:?}")),
            None => Err(format!("not an HTTP answer: {status:?}")),
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> String {
        self.url.clone()
    }

    fn deliver(&mut self, line: &str) -> Result<(), String> {
        self.post(line)
    }
}

// ---------------------------------------------------------------------------------------
// Command

struct CommandSink {
    cfg: CommandConfig,
}

impl CommandSink {
    fn new(cfg: &CommandConfig) -> Self {
        Self { cfg: cfg.clone() }
    }
}

impl Sink for CommandSink {
    fn name(&self) -> String {
        format!("command {}", self.cfg.program)
    }

    fn deliver(&mut self, line: &str) -> Result<(), String> {
        let timeout = Duration::from_secs_f64(self.cfg.timeout);
        // Standard output is hark's own event channel: the program's output is discarded;
        // its standard error is hark's.
        let mut child = Command::new(&self.cfg.program)
            .args(&self.cfg.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", self.cfg.program))?;
        // The event is small (well under a pipe's buffer): writing it cannot block on a
        // program that does not read.
        if let Some(mut stdin) = child.stdin.take() {
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            // A program that exits without reading its input is not an error in itself.
            let _ = stdin.write_all(&bytes);
        }
        let until = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("{:?} failed: {status}", self.cfg.program));
                }
                Ok(None) if Instant::now() >= until => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{:?} did not finish within {:.1} s and was killed",
                        self.cfg.program,
                        timeout.as_secs_f64()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("waiting for {:?}: {e}", self.cfg.program));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_is_the_mqtt_varint() {
        for (n, bytes) in [
            (0usize, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            put_remaining_length(&mut out, n);
            assert_eq!(out, bytes, "{n}");
            let mut packet = vec![0x30];
            packet.extend_from_slice(&bytes);
            packet.extend(std::iter::repeat_n(7u8, n));
            let (kind, body) = read_packet(&mut &packet[..]).unwrap();
            assert_eq!((kind, body.len()), (0x30, n));
        }
    }

    #[test]
    fn http_urls_are_split_into_host_port_and_path() {
        let u = parse_http_url("http://example.org:8080/hook?x=1").unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.authority.as_str(),
                u.path.as_str()
            ),
            ("example.org", 8080, "example.org:8080", "/hook?x=1")
        );
        let u = parse_http_url("http://127.0.0.1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = parse_http_url("http://[::1]:9000/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        let u = parse_http_url("http://h?q").unwrap();
        assert_eq!((u.host.as_str(), u.path.as_str()), ("h", "/?q"));
        assert!(parse_http_url("https://example.org/").is_err());
        assert!(parse_http_url("http://:80/").is_err());
        assert!(parse_http_url("http://h:x/").is_err());
        assert!(parse_http_url("http://user@h/").is_err());
    }
}
