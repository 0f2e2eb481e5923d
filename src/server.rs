//! The thin thread-safe layer: start a server, get a `Clone + Send + Sync` handle whose methods
//! send commands to the loop thread and wake it, and shut it down.

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Waker;

use crate::config::{Config, ConfigError};
use crate::engine::{AppEvent, Command, Data, Engine, RandomSource, SessionId};
use crate::io::{EventLoop, LoopCommand};

/// Why a server could not start.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Io(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Io(e) => write!(f, "cannot start server: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Io(e)
    }
}

/// The loop thread is gone (the server was shut down): the command was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerClosed;

impl fmt::Display for ServerClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server has shut down")
    }
}

impl std::error::Error for ServerClosed {}

/// A cheap, cloneable handle to a running server, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    commands: Sender<LoopCommand>,
    waker: Arc<Waker>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handle")
    }
}

impl Handle {
    fn send(&self, cmd: LoopCommand) -> Result<(), ServerClosed> {
        self.commands.send(cmd).map_err(|_| ServerClosed)?;
        self.waker.wake().map_err(|_| ServerClosed)
    }

    /// Sends a message on a raw Engine.IO session. Unknown or closed sessions are ignored.
    pub fn eio_send(&self, session: SessionId, data: Data) -> Result<(), ServerClosed> {
        self.send(LoopCommand::Engine(Command::EioSend { session, data }))
    }

    /// Closes a raw Engine.IO session.
    pub fn eio_close(&self, session: SessionId) -> Result<(), ServerClosed> {
        self.send(LoopCommand::Engine(Command::EioClose { session }))
    }
}

/// A running server: the loop thread, its handle and the stream of application events.
pub struct Server {
    handle: Handle,
    local_addr: SocketAddr,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    events: Mutex<Option<Receiver<AppEvent>>>,
}

impl Server {
    /// Validates `config`, binds, and starts the loop thread.
    pub fn start(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        let random = os_random()?;
        let cfg = Arc::new(config);
        let listener = std::net::TcpListener::bind(cfg.bind)?;
        let local_addr = listener.local_addr()?;
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (ev_tx, ev_rx) = mpsc::channel();
        let engine = Engine::new(cfg.clone(), random);
        let (event_loop, waker) = EventLoop::new(cfg, listener, engine, cmd_rx, ev_tx)?;
        let thread = std::thread::Builder::new()
            .name("tidings-loop".into())
            .spawn(move || event_loop.run())?;
        Ok(Server {
            handle: Handle {
                commands: cmd_tx,
                waker,
            },
            local_addr,
            thread: Some(thread),
            events: Mutex::new(Some(ev_rx)),
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The application events (sessions opening, messages, closes). Can be taken once.
    pub fn take_events(&self) -> Option<Receiver<AppEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    /// Closes every connection (within `grace`) and joins the loop thread.
    pub fn shutdown(mut self, grace: Duration) -> std::io::Result<()> {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> std::io::Result<()> {
        let _ = self.handle.send(LoopCommand::Shutdown(grace));
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the loop thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(1));
    }
}

/// Session ids come from the operating system's CSPRNG, read in blocks to keep syscalls rare.
fn os_random() -> std::io::Result<RandomSource> {
    let mut file = std::fs::File::open("/dev/urandom")?;
    let mut pool = [0u8; 4096];
    file.read_exact(&mut pool)?;
    let mut used = 0usize;
    Ok(Box::new(move |out: &mut [u8]| {
        for b in out.iter_mut() {
            if used >= pool.len() {
                if file.read_exact(&mut pool).is_err() {
                    // /dev/urandom does not fail once opened; if it ever did, refuse to hand out
                    // predictable ids by mixing in the clock (still unique, never reused).
                    let t = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    for (i, p) in pool.iter_mut().enumerate() {
                        *p ^= (t >> ((i % 16) * 8)) as u8;
                    }
                }
                used = 0;
            }
            *b = pool.get(used).copied().unwrap_or(0);
            used += 1;
        }
    }))
}
