//! A trapped call, copied out of the caller's memory and performed by the supervisor
//! with the copy: what is judged is exactly what is sent, whatever the caller's
//! threads write meanwhile. Layouts are LP64 Linux (x86_64 and aarch64 alike).

use crate::sys::remote::read_from;
use crate::sys::seccomp::exempt_syscall;
use nix::libc;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most bytes of data copied for one send: a longer stream send is sent in part (its
/// return value says how much, as a short send does); datagrams are far smaller.
const MAX_DATA: usize = 1 << 20;
/// Most control (ancillary) bytes, above any `optmem_max`.
const MAX_CONTROL: usize = 1 << 16;
const SOCKADDR_MAX: usize = std::mem::size_of::<libc::sockaddr_storage>();
const MSGHDR: usize = 56;
const MMSGHDR: usize = 64;
const IOVEC: usize = 16;
/// The kernel's own caps on iovecs per message and messages per `sendmmsg`.
const UIO_MAXIOV: usize = 1024;

/// One message as the caller gave it, copied.
#[derive(Default)]
pub(crate) struct Msg {
    name: Vec<u8>,
    data: Vec<u8>,
    control: Vec<u8>,
}

/// The copied call.
pub(crate) enum Call {
    Connect {
        fd: i32,
        name: Vec<u8>,
    },
    SendTo {
        fd: i32,
        msg: Msg,
        flags: u64,
    },
    SendMsg {
        fd: i32,
        msg: Msg,
        flags: u64,
    },
    SendMmsg {
        fd: i32,
        msgs: Vec<Msg>,
        flags: u64,
        vec_at: u64,
    },
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn copy(pid: i32, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    if len > 0 {
        read_from(pid, addr, &mut buf)?;
    }
    Ok(buf)
}

fn copy_name(pid: i32, addr: u64, len: u64) -> Result<Vec<u8>, i32> {
    match (addr, len as usize) {
        (0, _) => Ok(Vec::new()),
        (_, n) if n > SOCKADDR_MAX => Err(libc::EINVAL),
        (a, n) => copy(pid, a, n),
    }
}

/// A message at `at` (a `struct msghdr`): its name, its iovecs' bytes in one buffer
/// (up to [`MAX_DATA`]) and its control bytes.
fn copy_msg(pid: i32, at: u64) -> Result<Msg, i32> {
    let hdr = copy(pid, at, MSGHDR)?;
    let name = copy_name(pid, u64_at(&hdr, 0), u64::from(u32_at(&hdr, 8)))?;
    let (iov_at, iovlen) = (u64_at(&hdr, 16), u64_at(&hdr, 24) as usize);
    if iovlen > UIO_MAXIOV {
        return Err(libc::EMSGSIZE);
    }
    let iovs = copy(pid, iov_at, iovlen * IOVEC)?;
    let mut data = Vec::new();
    for i in 0..iovlen {
        let (base, len) = (
            u64_at(&iovs, i * IOVEC),
            u64_at(&iovs, i * IOVEC + 8) as usize,
        );
        let take = len.min(MAX_DATA - data.len());
        let start = data.len();
        data.resize(start + take, 0);
        read_from(pid, base, &mut data[start..])?;
        if data.len() == MAX_DATA {
            break;
        }
    }
    let control_len = u64_at(&hdr, 40) as usize;
    if control_len > MAX_CONTROL {
        return Err(libc::ENOBUFS);
    }
    let control = match u64_at(&hdr, 32) {
        0 => Vec::new(),
        c => copy(pid, c, control_len)?,
    };
    Ok(Msg {
        name,
        data,
        control,
    })
}

impl Call {
    /// Copies the call `nr(args)` made by a thread of process `pid`.
    pub(crate) fn copy(pid: i32, nr: i64, args: [u64; 6]) -> Result<Call, i32> {
        let fd = args[0] as i32;
        match nr {
            libc::SYS_connect => Ok(Call::Connect {
                fd,
                name: copy_name(pid, args[1], args[2])?,
            }),
            libc::SYS_sendto => {
                let len = (args[2] as usize).min(MAX_DATA);
                Ok(Call::SendTo {
                    fd,
                    msg: Msg {
                        name: copy_name(pid, args[4], args[5])?,
                        data: copy(pid, args[1], len)?,
                        control: Vec::new(),
                    },
                    flags: args[3],
                })
            }
            libc::SYS_sendmsg => Ok(Call::SendMsg {
                fd,
                msg: copy_msg(pid, args[1])?,
                flags: args[2],
            }),
            libc::SYS_sendmmsg => {
                let n = (args[2] as usize).min(UIO_MAXIOV);
                let msgs = (0..n)
                    .map(|i| copy_msg(pid, args[1] + (i * MMSGHDR) as u64))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Call::SendMmsg {
                    fd,
                    msgs,
                    flags: args[3],
                    vec_at: args[1],
                })
            }
            _ => Err(libc::ENOSYS),
        }
    }

    pub(crate) fn fd(&self) -> i32 {
        match self {
            Call::Connect { fd, .. }
            | Call::SendTo { fd, .. }
            | Call::SendMsg { fd, .. }
            | Call::SendMmsg { fd, .. } => *fd,
        }
    }

    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Call::Connect { .. })
    }

    /// The IP destinations the call names (none: no address, or not an IP family).
    pub(crate) fn destinations(&self) -> Vec<SocketAddr> {
        let names: Vec<&[u8]> = match self {
            Call::Connect { name, .. } => vec![name],
            Call::SendTo { msg, .. } | Call::SendMsg { msg, .. } => vec![&msg.name],
            Call::SendMmsg { msgs, .. } => msgs.iter().map(|m| m.name.as_slice()).collect(),
        };
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in names.into_iter().filter_map(inet) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// Performs the call with the copy; its return value, or the errno. For
    /// `sendmmsg`, the lengths sent are written back to the caller's `msg_len`s.
    /// `dont_wait`: a send with `MSG_DONTWAIT` added (EAGAIN instead of waiting).
    pub(crate) fn perform(&mut self, pid: i32, dont_wait: bool) -> Result<i64, i32> {
        let extra = if dont_wait {
            libc::MSG_DONTWAIT as u64
        } else {
            0
        };
        match self {
            Call::Connect { fd, name } => exempt_syscall(
                libc::SYS_connect,
                [*fd as u64, ptr_or_null(name), name.len() as u64, 0, 0, 0],
            ),
            Call::SendTo { fd, msg, flags } => exempt_syscall(
                libc::SYS_sendto,
                [
                    *fd as u64,
                    msg.data.as_ptr() as u64,
                    msg.data.len() as u64,
                    *flags | extra,
                    ptr_or_null(&msg.name),
                    msg.name.len() as u64,
                ],
            ),
            Call::SendMsg { fd, msg, flags } => {
                let mut iov = iovec(&mut msg.data);
                let hdr = msghdr(msg, &mut iov);
                exempt_syscall(
                    libc::SYS_sendmsg,
                    [*fd as u64, &hdr as *const _ as u64, *flags | extra, 0, 0, 0],
                )
            }
            Call::SendMmsg {
                fd,
                msgs,
                flags,
                vec_at,
            } => {
                let mut iovs: Vec<libc::iovec> =
                    msgs.iter_mut().map(|m| iovec(&mut m.data)).collect();
                let mut hdrs: Vec<libc::mmsghdr> = msgs
                    .iter_mut()
                    .zip(iovs.iter_mut())
                    .map(|(m, iov)| libc::mmsghdr {
                        msg_hdr: msghdr(m, iov),
                        msg_len: 0,
                    })
                    .collect();
                let sent = exempt_syscall(
                    libc::SYS_sendmmsg,
                    [
                        *fd as u64,
                        hdrs.as_mut_ptr() as u64,
                        hdrs.len() as u64,
                        *flags | extra,
                        0,
                        0,
                    ],
                )?;
                for (i, h) in hdrs.iter().take(sent.max(0) as usize).enumerate() {
                    let at = *vec_at + (i * MMSGHDR + MSGHDR) as u64;
                    crate::sys::remote::write_to(pid, at, &h.msg_len.to_ne_bytes())?;
                }
                Ok(sent)
            }
        }
    }
}

fn ptr_or_null(b: &[u8]) -> u64 {
    match b.is_empty() {
        true => 0,
        false => b.as_ptr() as u64,
    }
}

fn iovec(data: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    }
}

/// A `msghdr` over the copy; `iov` (the copy's one buffer) must outlive its use.
fn msghdr(msg: &mut Msg, iov: &mut libc::iovec) -> libc::msghdr {
    let (name, namelen) = match msg.name.is_empty() {
        true => (std::ptr::null_mut(), 0),
        false => (msg.name.as_mut_ptr().cast(), msg.name.len() as u32),
    };
    let (control, controllen) = match msg.control.is_empty() {
        true => (std::ptr::null_mut(), 0),
        false => (msg.control.as_mut_ptr().cast(), msg.control.len()),
    };
    libc::msghdr {
        msg_name: name,
        msg_namelen: namelen,
        msg_iov: iov,
        msg_iovlen: 1,
        msg_control: control,
        msg_controllen: controllen,
        msg_flags: 0,
    }
}

/// The IP address and port of a `sockaddr` copy (`None`: another family, or too short
/// for the kernel to take, which it then refuses itself).
pub(crate) fn inet(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET if name.len() >= 16 => {
            let a: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        libc::AF_INET6 if name.len() >= 24 => {
            let a: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_decode_and_other_families_do_not() {
        let v4 = socket2::SockAddr::from("127.0.0.1:5432".parse::<SocketAddr>().unwrap());
        let bytes = sockaddr_bytes(&v4);
        assert_eq!(inet(&bytes), Some("127.0.0.1:5432".parse().unwrap()));
        let v6 = socket2::SockAddr::from("[::1]:80".parse::<SocketAddr>().unwrap());
        assert_eq!(
            inet(&sockaddr_bytes(&v6)),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(inet(&sockaddr_bytes(&v6)[..20]), None, "too short");
        let unix = socket2::SockAddr::unix("/tmp/x").unwrap();
        assert_eq!(inet(&sockaddr_bytes(&unix)), None);
    }

    fn sockaddr_bytes(a: &socket2::SockAddr) -> Vec<u8> {
        let mut out = a.family().to_ne_bytes().to_vec();
        if let Some(s) = a.as_socket() {
            out.extend_from_slice(&s.port().to_be_bytes());
            match s.ip() {
                IpAddr::V4(ip) => {
                    out.extend_from_slice(&ip.octets());
                    out.resize(16, 0);
                }
                IpAddr::V6(ip) => {
                    out.extend_from_slice(&[0; 4]);
                    out.extend_from_slice(&ip.octets());
                    out.extend_from_slice(&[0; 4]);
                }
            }
        } else {
            out.resize(a.len() as usize, 0);
        }
        out
    }
}
