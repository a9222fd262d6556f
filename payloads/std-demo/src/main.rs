//! A Rust `std` program running as a libvmm payload (built for the hermit targets): each check prints
//! one `std-demo: ... ok` line with exact results; `cargo xtask test` boots it and reads them.
#[cfg(target_os = "hermit")]
use libvmm_guest as _;

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

fn main() {
    println!("std-demo: hello from std");
    // Collections and formatting.
    let mut m: HashMap<String, usize> = HashMap::new();
    for w in "the quick brown fox jumps over the lazy dog the end".split(' ') {
        *m.entry(w.to_string()).or_default() += 1;
    }
    let sorted: BTreeMap<_, _> = m.iter().collect();
    println!(
        "std-demo: words {} the={} first={:?} {:>6.3} {:#x} ok",
        m.len(),
        m["the"],
        sorted.keys().next().unwrap(),
        1.23456f64,
        255
    );
    // args and env.
    let args: Vec<String> = std::env::args().collect();
    println!(
        "std-demo: args {:?} env DEMO={:?} ok",
        args,
        std::env::var("DEMO").ok()
    );
    // Time: Instant and sleep.
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    let el = t.elapsed();
    println!(
        "std-demo: slept >= 20 ms: {} ok",
        el >= Duration::from_millis(20)
    );
    // Threads with Mutex, Condvar and channels.
    let counter = Arc::new(Mutex::new(0u64));
    let hs: Vec<_> = (0..8)
        .map(|i| {
            let c = Arc::clone(&counter);
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    *c.lock().unwrap() += 1;
                    if i % 2 == 0 {
                        std::thread::yield_now();
                    }
                }
                i * 10
            })
        })
        .collect();
    let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    println!(
        "std-demo: threads counter {} sum {} ok",
        *counter.lock().unwrap(),
        sum
    );
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = Arc::clone(&pair);
    let h = std::thread::spawn(move || {
        let (l, c) = &*p2;
        *l.lock().unwrap() = true;
        c.notify_one();
    });
    let (l, c) = &*pair;
    let mut ready = l.lock().unwrap();
    while !*ready {
        ready = c.wait(ready).unwrap();
    }
    drop(ready);
    h.join().unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..4u64 {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send(i * i).unwrap());
    }
    drop(tx);
    let total: u64 = rx.iter().sum();
    println!("std-demo: condvar ok, channel sum {} ok", total);
    // (A panic in a thread cannot be caught by `join` here: the hermit targets are panic=abort, so
    // any panic aborts the payload, stop code 98.)
    // Networking: no device.
    let e = std::net::TcpStream::connect("10.0.0.1:80").unwrap_err();
    println!("std-demo: socket error {:?} ok", e.kind());
    // Files: one given at image build time (`--file payloads/std-demo/greeting.txt:/demo/greeting.txt`,
    // as its boot case does), then a round trip through the tmpfs in guest RAM.
    match std::fs::read_to_string("/demo/greeting.txt") {
        Ok(s) => println!("std-demo: image file {:?} {} bytes ok", s, s.len()),
        Err(e) => println!(
            "std-demo: no image file /demo/greeting.txt ({:?}); boot with --file payloads/std-demo/greeting.txt:/demo/greeting.txt",
            e.kind()
        ),
    }
    match tmpfs_round_trip() {
        Ok(r) => println!("std-demo: tmpfs {r} ok"),
        Err(e) => println!("std-demo: tmpfs failed: {e}"),
    }
    std::process::exit(3);
}

/// Creates a directory and a file, writes, appends, seeks, reads back, lists, removes: what it saw.
fn tmpfs_round_trip() -> std::io::Result<String> {
    use std::fs;
    use std::io::{Read, Seek, SeekFrom, Write};
    fs::create_dir_all("/scratch/demo")?;
    fs::File::create("/scratch/demo/a.txt")?.write_all(b"one two three")?;
    fs::OpenOptions::new()
        .append(true)
        .open("/scratch/demo/a.txt")?
        .write_all(b" four")?;
    fs::write("/scratch/demo/b.txt", b"bee")?;
    let mut f = fs::File::open("/scratch/demo/a.txt")?;
    f.seek(SeekFrom::Start(4))?;
    let mut read = String::new();
    f.read_to_string(&mut read)?;
    drop(f);
    let len = fs::metadata("/scratch/demo/a.txt")?.len();
    let mut names = fs::read_dir("/scratch/demo")?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort();
    let not_empty = fs::remove_dir("/scratch/demo").is_err();
    fs::remove_file("/scratch/demo/a.txt")?;
    fs::remove_file("/scratch/demo/b.txt")?;
    fs::remove_dir("/scratch/demo")?;
    let gone = fs::metadata("/scratch/demo").map_err(|e| e.kind()).err();
    let rename = fs::rename("/scratch", "/scratch2")
        .map_err(|e| e.kind())
        .err();
    Ok(format!(
        "read {read:?} len {len} dir {names:?} busy {not_empty} after rmdir {gone:?} rename {rename:?}"
    ))
}
