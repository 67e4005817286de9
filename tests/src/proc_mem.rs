//! Reading another process's memory the way an attacker with root would: through
//! `/proc/PID/maps` + `/proc/PID/mem` and `process_vm_readv`.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub path: String,
}

pub fn maps(pid: u32) -> Vec<Mapping> {
    let f = File::open(format!("/proc/{pid}/maps")).unwrap();
    BufReader::new(f)
        .lines()
        .map(|l| {
            let l = l.unwrap();
            let f: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = f[0].split_once('-').unwrap();
            Mapping {
                start: u64::from_str_radix(s, 16).unwrap(),
                end: u64::from_str_radix(e, 16).unwrap(),
                perms: f[1].to_owned(),
                path: f.get(5..).map(|p| p.join(" ")).unwrap_or_default(),
            }
        })
        .collect()
}

/// What a scan of every readable mapping found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Occurrences of the needle in memory that could be read.
    pub hits: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Mappings that are readable by their permissions but whose read failed, with errno.
    pub unreadable: Vec<(Mapping, i32)>,
    /// Where the hits were: mapping path (or `[anon]`) and count.
    pub hit_in: Vec<(String, usize)>,
}

/// Reads every `r` mapping of `pid` through /proc/PID/mem and counts `needle`.
pub fn scan(pid: u32, needle: &[u8]) -> Scan {
    let mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = Scan::default();
    for m in maps(pid) {
        if !m.perms.starts_with('r')
            || m.path == "[vvar]"
            || m.path == "[vsyscall]"
            || m.path == "[vvar_vclock]"
        {
            continue;
        }
        let len = (m.end - m.start) as usize;
        let mut buf = vec![0u8; len];
        match read_fully(&mem, &mut buf, m.start) {
            Ok(()) => {
                let n = crate::count(&buf, needle);
                if n > 0 {
                    let name = if m.path.is_empty() {
                        "[anon]".to_owned()
                    } else {
                        m.path.clone()
                    };
                    out.hit_in
                        .push((format!("{name} {:x}-{:x}", m.start, m.end), n));
                }
                out.hits += n;
                out.bytes += len as u64;
            }
            Err(e) => out.unreadable.push((m, e.raw_os_error().unwrap_or(0))),
        }
    }
    out
}

fn read_fully(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    f.read_exact_at(buf, off)
}

/// pread of `len` bytes at `addr` in `pid` through /proc/PID/mem.
pub fn pread_mem(pid: u32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let mut buf = vec![0u8; len];
    mem.read_exact_at(&mut buf, addr)?;
    Ok(buf)
}

/// process_vm_readv of `len` bytes at `addr` in `pid`.
pub fn vm_read(pid: u32, addr: u64, len: usize) -> nix::Result<Vec<u8>> {
    use nix::sys::uio::{RemoteIoVec, process_vm_readv};
    let mut buf = vec![0u8; len];
    let n = process_vm_readv(
        nix::unistd::Pid::from_raw(pid as i32),
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &[RemoteIoVec {
            base: addr as usize,
            len,
        }],
    )?;
    buf.truncate(n);
    Ok(buf)
}
