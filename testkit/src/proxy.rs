//! A fault-injecting TCP proxy on loopback, put between a client and a real server (the test API
//! server, moto) to make the network misbehave the way it does in production: a peer that stops
//! answering (half-open connection, hung renewal), connections reset mid-call, refused connects.
//!
//! The proxy forwards bytes, it does not parse them, so it works under TLS. It can also be a
//! forward proxy itself ([`FaultProxy::start_connect`]): it answers HTTP `CONNECT host:port`
//! (what a client does for `HTTPS_PROXY`) and passes absolute-form requests (`HTTP_PROXY`) on to
//! the origin they name, counting the connections it carried.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
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
}

/// Where accepted connections go.
#[derive(Debug, Clone, Copy)]
enum Upstream {
    /// Always to this address.
    Fixed(SocketAddr),
    /// To the `host:port` of the client's `CONNECT` or absolute-form request.
    Connect,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    connections: Arc<AtomicU64>,
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

    async fn spawn(upstream: Upstream) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let mode = Arc::new(watch::Sender::new(Mode::Forward));
        let connections = Arc::new(AtomicU64::new(0));
        let task = {
            let (mode, connections) = (mode.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve(client, upstream, mode.subscribe()));
                }
            })
        };
        Ok(FaultProxy { address, mode, connections, task })
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
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end too: they watch the mode.
        self.mode.send_replace(Mode::Reset);
    }
}

/// Waits until the mode lets bytes through: `true` for Forward, `false` for Reset.
async fn passable(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Stall).await {
        Ok(m) => *m == Mode::Forward,
        Err(_) => false,
    }
}

async fn serve(mut client: TcpStream, upstream: Upstream, mut mode: watch::Receiver<Mode>) {
    if !passable(&mut mode).await {
        return;
    }
    let (target, head) = match upstream {
        Upstream::Fixed(address) => (address.to_string(), None),
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
        (Upstream::Fixed(_), _) => Ok(()),
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
