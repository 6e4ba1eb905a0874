//! A fault-injecting TCP proxy on loopback, put between a client and a real server (the test API
//! server, moto) to make the network misbehave the way it does in production: a peer that stops
//! answering (half-open connection, hung renewal), connections reset mid-call, refused connects.
//!
//! The proxy forwards bytes, it does not parse them, so it works under TLS. It can also be a
//! forward proxy itself ([`FaultProxy::start_connect`]): it answers HTTP `CONNECT host:port`
//! (what a client does for `HTTPS_PROXY`) and passes absolute-form requests (`HTTP_PROXY`) on to
//! the origin they name, counting the connections it carried.
//!
//! In front of a plain-HTTP server (moto) it can also work per request ([`FaultProxy::start_http`]):
//! it reads each request, records it with the answer ([`Exchange`]), and can answer it itself with
//! an error status ([`Mode::Fail`]: 5xx, S3's 503 `SlowDown`), which a byte-level proxy cannot.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use parking_lot::Mutex;

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward every byte both ways.
    Forward,
    /// Keep every connection open but forward nothing (new ones are accepted and held): the peer
    /// looks alive at the TCP level and never answers. Bytes held resume on [`Mode::Forward`].
    Stall,
    /// Close every open connection and every new one at once (connection reset / refused).
    Reset,
    /// HTTP proxies only ([`FaultProxy::start_http`]): answer every new request with this status
    /// and an S3-style error body (503 is `SlowDown`, throttling; 500 `InternalError`; other
    /// codes `ServiceUnavailable`), without passing it on. Byte-level proxies forward.
    Fail(u16),
}

/// One request an HTTP proxy saw, and what the client got back.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// When the request head had arrived (before any stall).
    pub at: SystemTime,
    /// The method, e.g. `PUT`.
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The request body as sent (with its chunked framing, if any).
    pub body: Vec<u8>,
    /// The status the client got; `None` when its connection was closed without an answer.
    pub status: Option<u16>,
    /// The response body the client got.
    pub response: Vec<u8>,
    /// The answer came from the proxy ([`Mode::Fail`]), not from the server.
    pub injected: bool,
}

/// Where accepted connections go.
#[derive(Debug, Clone, Copy)]
enum Upstream {
    /// Always to this address.
    Fixed(SocketAddr),
    /// To the `host:port` of the client's `CONNECT` or absolute-form request.
    Connect,
    /// To this plain-HTTP server, one request per upstream connection, each recorded.
    Http(SocketAddr),
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    connections: Arc<AtomicU64>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a random 127.0.0.1 port forwarding to `upstream`.
    ///
    /// Errors: binding the listener failed.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        Self::spawn(Upstream::Fixed(upstream)).await
    }

    /// Starts a forward proxy on a random 127.0.0.1 port: each connection names its upstream in
    /// a `CONNECT host:port HTTP/1.1` request, then carries opaque bytes (TLS), or in an
    /// absolute-form request (`GET http://host:port/…`), which is passed on with what follows.
    ///
    /// Errors: binding the listener failed.
    pub async fn start_connect() -> io::Result<FaultProxy> {
        Self::spawn(Upstream::Connect).await
    }

    /// Starts a per-request proxy on a random 127.0.0.1 port in front of the plain-HTTP server
    /// `upstream`: every request is recorded ([`FaultProxy::exchanges`]) and can be answered with
    /// an injected error ([`Mode::Fail`]). Each request gets its own upstream connection and the
    /// answer closes the client's (`Connection: close`), so no response needs parsing.
    ///
    /// Errors: binding the listener failed.
    pub async fn start_http(upstream: SocketAddr) -> io::Result<FaultProxy> {
        Self::spawn(Upstream::Http(upstream)).await
    }

    async fn spawn(upstream: Upstream) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let mode = Arc::new(watch::Sender::new(Mode::Forward));
        let connections = Arc::new(AtomicU64::new(0));
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (mode, connections, exchanges) = (mode.clone(), connections.clone(), exchanges.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::Relaxed);
                    match upstream {
                        Upstream::Http(server) => {
                            tokio::spawn(serve_http(client, server, mode.subscribe(), exchanges.clone()));
                        }
                        _ => {
                            tokio::spawn(serve(client, upstream, mode.subscribe()));
                        }
                    }
                }
            })
        };
        Ok(FaultProxy { address, mode, connections, exchanges, task })
    }

    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Switches every open and future connection to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// How many connections (or `CONNECT` tunnels) clients opened so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The requests an HTTP proxy recorded since the last call (empty for other proxies).
    pub fn take_exchanges(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.exchanges.lock())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end too: they watch the mode.
        self.mode.send_replace(Mode::Reset);
    }
}

/// Waits until the mode lets bytes through: `true` for Forward (and Fail, which only HTTP
/// proxies act on), `false` for Reset.
async fn passable(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Stall).await {
        Ok(m) => *m != Mode::Reset,
        Err(_) => false,
    }
}

async fn serve(mut client: TcpStream, upstream: Upstream, mut mode: watch::Receiver<Mode>) {
    if !passable(&mut mode).await {
        return;
    }
    let (target, head) = match upstream {
        Upstream::Fixed(address) | Upstream::Http(address) => (address.to_string(), None),
        Upstream::Connect => match read_proxy_request(&mut client).await {
            Some(request) => request,
            None => return,
        },
    };
    let Ok(mut server) = TcpStream::connect(&target).await else {
        if matches!(upstream, Upstream::Connect) {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
        }
        return;
    };
    let answered = match (upstream, head) {
        (Upstream::Fixed(_) | Upstream::Http(_), _) => Ok(()),
        // A forward-proxy request: the origin gets it as sent (absolute-form is valid HTTP/1.1).
        (Upstream::Connect, Some(head)) => server.write_all(&head).await,
        (Upstream::Connect, None) => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await,
    };
    if answered.is_err() {
        return;
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending (or a Reset) drops all four halves: both sockets close.
    tokio::select! {
        _ = pump(client_read, server_write, mode.clone()) => {}
        _ = pump(server_read, client_write, mode.clone()) => {}
        _ = mode.wait_for(|m| *m == Mode::Reset) => {}
    }
}

/// Copies `from` to `to`, holding each chunk while the mode is Stall.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(chunk) = buf.get(..n) else { return };
        if !passable(&mut mode).await || to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// HTTP mode: reads one request, then holds it (Stall), drops it (Reset), answers it (Fail) or
/// passes it on over a fresh connection with `Connection: close`, and records the exchange.
async fn serve_http(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    log: Arc<Mutex<Vec<Exchange>>>,
) {
    let (read, mut write) = client.into_split();
    let mut reader = BufReader::new(read);
    let Some((head, body)) = read_http_request(&mut reader).await else { return };
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or_default()).into_owned();
    let mut words = line.split_whitespace();
    let mut exchange = Exchange {
        at: SystemTime::now(),
        method: words.next().unwrap_or_default().to_owned(),
        target: words.next().unwrap_or_default().to_owned(),
        body,
        status: None,
        response: Vec::new(),
        injected: false,
    };
    let decided = match mode.wait_for(|m| *m != Mode::Stall).await {
        Ok(m) => *m,
        Err(_) => Mode::Reset,
    };
    let answer = match decided {
        Mode::Fail(status) => {
            exchange.injected = true;
            Some(injected_error(status))
        }
        Mode::Forward => tokio::select! {
            answer = forward_http(upstream, &head, &exchange.body) => answer,
            _ = mode.wait_for(|m| *m == Mode::Reset) => None,
        },
        Mode::Stall | Mode::Reset => None,
    };
    if let Some(answer) = answer
        && write.write_all(&answer).await.is_ok()
    {
        let text = String::from_utf8_lossy(&answer);
        exchange.status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        let body_at = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
        exchange.response = answer.get(body_at..).unwrap_or_default().to_vec();
    }
    log.lock().push(exchange);
}

/// Sends one request to `upstream` with `Connection: close` and reads the whole answer.
async fn forward_http(upstream: SocketAddr, head: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(head);
    let mut rewritten = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).await.ok()?;
    server.write_all(rewritten.as_bytes()).await.ok()?;
    server.write_all(body).await.ok()?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).await.ok()?;
    (!answer.is_empty()).then_some(answer)
}

/// The answer of [`Mode::Fail`]: `status` with an S3-style error document.
fn injected_error(status: u16) -> Vec<u8> {
    let (reason, code, message) = match status {
        503 => ("Slow Down", "SlowDown", "Please reduce your request rate."),
        500 => {
            ("Internal Server Error", "InternalError", "We encountered an internal error. Please try again.")
        }
        _ => ("Service Unavailable", "ServiceUnavailable", "Injected by the fault proxy."),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 request: its head, and its body by `Content-Length` or chunked framing
/// (kept framed, to pass on as sent).
async fn read_http_request(reader: &mut (impl AsyncBufRead + Unpin)) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if reader.read_until(b'\n', &mut head).await.ok()? == 0 || head.len() > 64 * 1024 {
            return None;
        }
    }
    let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let header = |name: &str| {
        lower.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_owned()))
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let start = body.len();
            if reader.read_until(b'\n', &mut body).await.ok()? == 0 {
                return None;
            }
            let size_line = String::from_utf8_lossy(body.get(start..)?).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let start = body.len();
                    if reader.read_until(b'\n', &mut body).await.ok()? == 0 || body.get(start..)? == b"\r\n" {
                        return Some((head, body));
                    }
                }
            }
            let mut chunk = vec![0u8; size.checked_add(2)?];
            reader.read_exact(&mut chunk).await.ok()?;
            body.extend_from_slice(&chunk);
        }
    }
    if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0u8; length];
        reader.read_exact(&mut body).await.ok()?;
    }
    Some((head, body))
}

/// Reads a proxy request head: `CONNECT host:port` gives the target and no head to forward;
/// an absolute-form request (`GET http://host:port/path`) gives its authority and the head
/// itself, to send on. `None` for anything else.
async fn read_proxy_request(client: &mut TcpStream) -> Option<(String, Option<Vec<u8>>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || client.read_exact(&mut byte).await.is_err() {
            return None;
        }
        head.extend_from_slice(&byte);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let (method, target) = (words.next()?, words.next()?);
    if method == "CONNECT" {
        return Some((target.to_owned(), None));
    }
    let authority = target.strip_prefix("http://")?.split('/').next()?.to_owned();
    let authority = if authority.contains(':') { authority } else { format!("{authority}:80") };
    Some((authority, Some(head)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        stream.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_stalls_and_resets() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.address()).await.expect("connect");
        assert_eq!(round_trip(&mut stream, Duration::from_secs(5)).await.as_deref(), Some(&b"ping"[..]));

        proxy.set(Mode::Stall);
        assert_eq!(round_trip(&mut stream, Duration::from_millis(300)).await, None, "stalled: no answer");
        proxy.set(Mode::Forward);
        let mut held = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut held))
            .await
            .expect("held bytes resume")
            .expect("read");
        assert_eq!(&held, b"ping");

        proxy.set(Mode::Reset);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "reset closes the connection: {read:?}");

        let mut refused = TcpStream::connect(proxy.address()).await.expect("connect");
        assert_eq!(round_trip(&mut refused, Duration::from_secs(5)).await, None, "reset: no answer");
        proxy.set(Mode::Forward);
        let mut again = TcpStream::connect(proxy.address()).await.expect("connect");
        assert_eq!(round_trip(&mut again, Duration::from_secs(5)).await.as_deref(), Some(&b"ping"[..]));
    }

    /// A one-shot HTTP server answering every request with `204` and closing.
    async fn http_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut reader = BufReader::new(read);
                    if read_http_request(&mut reader).await.is_some() {
                        let _ =
                            write.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
                    }
                });
            }
        });
        address
    }

    async fn http_call(proxy: &FaultProxy, request: &str, within: Duration) -> Option<String> {
        let mut stream = TcpStream::connect(proxy.address()).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        tokio::time::timeout(within, stream.read_to_string(&mut answer)).await.ok()?.ok()?;
        Some(answer)
    }

    #[tokio::test]
    async fn http_mode_records_requests_and_injects_errors() {
        let proxy = FaultProxy::start_http(http_server().await).await.expect("proxy");
        let put = "PUT /bucket?tagging HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let answer = http_call(&proxy, put, Duration::from_secs(5)).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
        let chunked =
            "POST /b?delete HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        proxy.set(Mode::Fail(503));
        let answer = http_call(&proxy, chunked, Duration::from_secs(5)).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("<Code>SlowDown</Code>"), "{answer}");
        proxy.set(Mode::Stall);
        assert_eq!(http_call(&proxy, put, Duration::from_millis(300)).await, None, "stalled: no answer");

        let seen = proxy.take_exchanges();
        assert_eq!(seen.len(), 2, "the stalled request is recorded once it is decided: {seen:?}");
        assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("PUT", "/bucket?tagging"));
        assert_eq!(
            (seen[0].body.as_slice(), seen[0].status, seen[0].injected),
            (&b"hello"[..], Some(204), false)
        );
        assert_eq!((seen[1].method.as_str(), seen[1].status, seen[1].injected), ("POST", Some(503), true));
        assert!(seen[1].body.ends_with(b"0\r\n\r\n"), "chunked body read to its end");
        proxy.set(Mode::Forward);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let released = proxy.take_exchanges();
        assert_eq!(released.len(), 1, "the held request goes on once the stall ends");
    }

    #[tokio::test]
    async fn connect_mode_tunnels_to_the_named_target() {
        let target = echo_server().await;
        let proxy = FaultProxy::start_connect().await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.address()).await.expect("connect");
        stream
            .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut status = [0u8; 39];
        stream.read_exact(&mut status).await.expect("status");
        assert!(status.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&status));
        assert_eq!(round_trip(&mut stream, Duration::from_secs(5)).await.as_deref(), Some(&b"ping"[..]));
        assert_eq!(proxy.connections(), 1);
    }
}
