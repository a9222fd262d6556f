//! `cargo test` through the libvmm runner: the test harness runs these inside libvmm.
#[cfg(target_os = "hermit")]
use libvmm_guest as _;

pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds() {
        assert_eq!(add(2, 3), 5);
    }

    #[test]
    fn collections_and_threads() {
        let v: Vec<u64> = (1..=10).collect();
        let h = std::thread::spawn(move || v.iter().sum::<u64>());
        assert_eq!(h.join().unwrap(), 55);
    }

    #[test]
    fn files() -> std::io::Result<()> {
        std::fs::write("/t.txt", b"x")?;
        assert_eq!(std::fs::read("/t.txt")?, b"x");
        std::fs::remove_file("/t.txt")
    }

    /// No network device: every socket call is an error (ENOSYS, raw OS error 38), never a link failure.
    #[test]
    #[cfg(target_os = "hermit")]
    fn network_is_refused() {
        use std::net::{TcpListener, TcpStream, UdpSocket};
        let e = TcpListener::bind("127.0.0.1:8080").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(38));
        assert!(UdpSocket::bind("127.0.0.1:8081").is_err());
        assert!(TcpStream::connect("10.0.0.1:80").is_err());
    }

    #[test]
    #[cfg(feature = "fail")]
    fn fails() -> Result<(), String> {
        Err("this test fails on purpose".into())
    }
}
