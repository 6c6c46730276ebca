//! Real `nats-server` processes for tests and benchmarks: each with its own ports, data
//! directory and JetStream domain, joined to a parent by a leaf-node connection, and able
//! to be stopped (a cut link) and started again on the same ports and data.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `nats-server` process.
pub struct NatsServer {
    /// Its name and JetStream domain.
    pub name: String,
    /// Client port on 127.0.0.1.
    pub port: u16,
    /// Port on which it accepts leaf-node connections from the tier below.
    pub leaf_port: u16,
    /// The parent's leaf-node port, when it is a leaf node.
    pub parent_leaf_port: Option<u16>,
    advertised: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

/// Whether `nats-server` can be run here; when it cannot, tests skip (or fail when
/// `CITYWARD_REQUIRE_SERVICES` is set).
pub fn available() -> bool {
    let found = Command::new("nats-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found && std::env::var("CITYWARD_REQUIRE_SERVICES").is_ok() {
        panic!("nats-server is not installed; install Debian's nats-server package (.ci/run does)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port()
}

impl NatsServer {
    /// Starts a server named `name` (also its JetStream domain) with its data under
    /// `dir`, as a leaf node of `parent` when given.
    pub fn start(name: &str, dir: &std::path::Path, parent: Option<&NatsServer>) -> NatsServer {
        NatsServer::start_leaf_of(name, dir, parent.map(|p| p.leaf_port))
    }

    /// Starts a server whose leaf-node connection goes to `uplink_port` (a parent's leaf
    /// port, or a [`LinkCutter`] in front of it).
    pub fn start_leaf_of(name: &str, dir: &std::path::Path, uplink_port: Option<u16>) -> NatsServer {
        NatsServer::start_behind(name, dir, uplink_port, None)
    }

    /// Starts a server that tells its leaf nodes to reach it at `advertised` (a
    /// [`LinkCutter`]'s port), so that they reconnect through the cutter too.
    pub fn start_behind(name: &str, dir: &std::path::Path, uplink_port: Option<u16>, advertised: Option<u16>) -> NatsServer {
        let mut server = NatsServer {
            name: name.into(),
            port: free_port(),
            leaf_port: free_port(),
            advertised,
            parent_leaf_port: uplink_port,
            dir: dir.join(name),
            child: None,
        };
        std::fs::create_dir_all(&server.dir).expect("server directory");
        server.launch();
        server
    }

    /// The server's process id, while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let remotes = match self.parent_leaf_port {
            Some(p) => format!("  remotes: [ {{ url: \"nats-leaf://127.0.0.1:{p}\" }} ]\n  reconnect: 1\n"),
            None => String::new(),
        };
        let advertise = match self.advertised {
            Some(p) => format!("  advertise: \"127.0.0.1:{p}\"\n"),
            None => String::new(),
        };
        let config = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{store}\"\n  domain: {name}\n}}\nleafnodes {{\n  listen: 127.0.0.1:{leaf}\n{advertise}{remotes}}}\n",
            name = self.name,
            port = self.port,
            store = self.dir.join("js").display(),
            leaf = self.leaf_port,
        );
        let file = self.dir.join("nats.conf");
        std::fs::write(&file, config).expect("server configuration");
        let log = std::fs::File::create(self.dir.join("nats.log")).expect("server log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server {} did not listen on {}; see {}", self.name, self.port, self.dir.join("nats.log").display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL): its clients and leaf nodes lose it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay in front of a parent's leaf-node port: cutting it drops the leaf
/// connection and refuses new ones while both servers keep running — a network partition.
pub struct LinkCutter {
    /// The port the child's leaf connection should go to.
    pub port: u16,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LinkCutter {
    /// Relays 127.0.0.1:`port` to 127.0.0.1:`target` on a thread of its own (the
    /// target may be set later, with [`LinkCutter::set_target`]).
    pub fn start(target: u16) -> LinkCutter {
        use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
        let target = Arc::new(AtomicU16::new(target));
        let t = target.clone();
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay port");
        let port = listener.local_addr().expect("address").port();
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (o, g) = (open.clone(), generation.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: refused while cut
                }
                let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", t.load(Ordering::SeqCst))) else { continue };
                // As nats-server does on its own sockets: no Nagle delay on small writes
                // (an acknowledgement would otherwise wait for the peer's delayed ACK).
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let born = g.load(Ordering::SeqCst);
                for (mut from, mut to) in [
                    (inbound.try_clone().expect("clone"), outbound.try_clone().expect("clone")),
                    (outbound, inbound),
                ] {
                    let (o, g) = (o.clone(), g.clone());
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            if !o.load(Ordering::SeqCst) || g.load(Ordering::SeqCst) != born {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        LinkCutter { port, target, open, generation }
    }

    /// Where the relay goes.
    pub fn set_target(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cuts the link: the relayed connections close, new ones are refused. Returns once
    /// the relay threads have noticed (they look every 50 ms).
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Lets connections through again (the child's server reconnects by itself).
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
