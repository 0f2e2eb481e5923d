//! "Too many open files" must not spin the loop: the server runs under a tiny descriptor limit
//! (`prlimit`), is flooded with connections, must stay nearly idle while it cannot accept, and must
//! serve again once descriptors are free.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn example(name: &str) -> Option<PathBuf> {
    // target/<profile>/deps/emfile-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.exists().then_some(path)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn handshake(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(
        b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn descriptor_exhaustion_neither_spins_nor_wedges_the_loop() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let Some(binary) = example("conformance") else {
        panic!("target/…/examples/conformance is missing: `cargo test` builds examples; run it normally");
    };
    let port = free_port();
    let child = Command::new("prlimit")
        .arg("--nofile=48:48")
        .arg(&binary)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while handshake(port).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // prlimit execs the server, so the child's pid is the server's.
    let pid = server.0.id();

    // Far more connections than descriptors: the rest wait in the backlog and accept() fails.
    let mut flood = Vec::new();
    for _ in 0..120 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    assert!(
        flood.len() > 60,
        "could only open {} connections",
        flood.len()
    );
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    // A loop spinning on a readable listener burns ~100 ticks per second; backing off uses ~0.
    assert!(
        used < 50,
        "the loop used {used} ticks in 1 s while it could not accept"
    );

    // Free the descriptors: the server must serve new clients again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(resp) = handshake(port) {
            if resp.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not recover after descriptors were freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
