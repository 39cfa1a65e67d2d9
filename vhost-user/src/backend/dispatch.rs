//! The request table: what the backend does with each vhost-user request, after the framing
//! checks of [`crate::connection`] and before the reply [`Backend::handle_message`] sends.

use std::os::unix::net::UnixStream;

use super::{Backend, Reply};
use crate::connection::Message;
use crate::error::{Error, Result};
use crate::memory::{GuestMemory, MAX_MEM_SLOTS};
use crate::message::{
    parse_mem_table, parse_single_region, parse_u64, protocol_features as pf, ConfigMsg, Request,
    VringAddr, VringState, VHOST_USER_F_PROTOCOL_FEATURES, VRING_IDX_MASK, VRING_NOFD_MASK,
};
use crate::net::{self, DEVICE_FEATURES};
use crate::ring::MAX_QUEUE_SIZE;

use super::PROTOCOL_FEATURES;

impl Backend {
    pub(super) fn dispatch(&mut self, req: Request, msg: Message) -> Result<Reply> {
        let body = &msg.body[..];
        // Descriptors we do not keep are closed when `fds` drops, on every path.
        let mut fds = msg.fds;
        let nfds = fds.len();
        let expect_fds = |want: usize| -> Result<()> {
            if nfds != want {
                return Err(Error::FdCount {
                    request: req.name(),
                    got: nfds,
                    want,
                });
            }
            Ok(())
        };
        match req {
            Request::GET_FEATURES => {
                expect_fds(0)?;
                Ok(Reply::Payload(DEVICE_FEATURES.to_le_bytes().to_vec()))
            }
            Request::SET_FEATURES => {
                expect_fds(0)?;
                let f = parse_u64(req, body)?;
                self.set_features(f)?;
                Ok(Reply::Ack)
            }
            Request::SET_OWNER => {
                expect_fds(0)?;
                no_body(req, body)?;
                self.owner = true;
                Ok(Reply::Ack)
            }
            Request::RESET_OWNER | Request::RESET_DEVICE => {
                expect_fds(0)?;
                no_body(req, body)?;
                if req == Request::RESET_DEVICE && self.protocol_features & pf::RESET_DEVICE == 0 {
                    return Err(Error::Invalid("RESET_DEVICE without its protocol feature"));
                }
                if req == Request::RESET_DEVICE {
                    self.reset_device();
                } else {
                    self.reset();
                }
                Ok(Reply::Ack)
            }
            Request::GET_PROTOCOL_FEATURES => {
                expect_fds(0)?;
                Ok(Reply::Payload(PROTOCOL_FEATURES.to_le_bytes().to_vec()))
            }
            Request::SET_PROTOCOL_FEATURES => {
                expect_fds(0)?;
                let f = parse_u64(req, body)?;
                if f & !PROTOCOL_FEATURES != 0 {
                    return Err(Error::Rejected(format!(
                        "protocol features {:#x} were not offered",
                        f & !PROTOCOL_FEATURES
                    )));
                }
                self.protocol_features = f;
                self.protocol_set = true;
                Ok(Reply::Ack)
            }
            Request::GET_QUEUE_NUM => {
                expect_fds(0)?;
                Ok(Reply::Payload(
                    u64::from(self.cfg.queue_pairs).to_le_bytes().to_vec(),
                ))
            }
            Request::SET_MEM_TABLE => {
                let regions = parse_mem_table(body)?;
                expect_fds(regions.len())?;
                let mem = GuestMemory::from_table(&regions, fds)?;
                self.check_log_covers(&mem)?;
                self.replace_memory(mem);
                Ok(Reply::Ack)
            }
            Request::GET_MAX_MEM_SLOTS => {
                expect_fds(0)?;
                Ok(Reply::Payload(
                    (MAX_MEM_SLOTS as u64).to_le_bytes().to_vec(),
                ))
            }
            Request::ADD_MEM_REG => {
                self.need_protocol(pf::CONFIGURE_MEM_SLOTS, req)?;
                expect_fds(1)?;
                let r = parse_single_region(req, body)?;
                let fd = fds.pop().ok_or(Error::Invalid("no fd"))?;
                let mem = match &self.mem {
                    Some(m) => m.with_region(r, fd)?,
                    None => GuestMemory::from_table(&[r], vec![fd])?,
                };
                self.check_log_covers(&mem)?;
                self.replace_memory(mem);
                Ok(Reply::Ack)
            }
            Request::REM_MEM_REG => {
                self.need_protocol(pf::CONFIGURE_MEM_SLOTS, req)?;
                // QEMU attaches the region's fd; it is not needed and is closed with the message.
                if nfds > 1 {
                    expect_fds(1)?;
                }
                let r = parse_single_region(req, body)?;
                let mem = self
                    .mem
                    .as_ref()
                    .ok_or(Error::Invalid("REM_MEM_REG with no memory mapped"))?
                    .without_region(&r)?;
                self.replace_memory(mem);
                Ok(Reply::Ack)
            }
            Request::SET_VRING_NUM => {
                expect_fds(0)?;
                let s = VringState::parse(req, body)?;
                let i = self.vring_index(s.index)?;
                // Packed ring sizes need not be powers of two.
                let packed = self.features & net::F_RING_PACKED != 0;
                if s.num == 0
                    || s.num > u32::from(MAX_QUEUE_SIZE)
                    || !(packed || s.num.is_power_of_two())
                {
                    return Err(Error::Rejected(format!(
                        "queue {i}: size {} must be {} in 1..=32768",
                        s.num,
                        if packed { "a number" } else { "a power of two" }
                    )));
                }
                self.stop_queue(i);
                self.vrings[i].num = u16::try_from(s.num).ok();
                Ok(Reply::Ack)
            }
            Request::SET_VRING_ADDR => {
                expect_fds(0)?;
                let a = VringAddr::parse(body)?;
                let i = self.vring_index(a.index)?;
                self.check_vring_log(&a, self.vrings[i].num)?;
                let was_running = self.stop_queue(i);
                self.vrings[i].addr = Some(a);
                if was_running {
                    self.try_start(i);
                }
                Ok(Reply::Ack)
            }
            Request::SET_VRING_BASE => {
                expect_fds(0)?;
                let s = VringState::parse(req, body)?;
                let i = self.vring_index(s.index)?;
                // Split: the avail index (16 bits). Packed: the avail position and wrap counter
                // in bits 0-15, optionally the used ones in bits 16-31.
                if self.features & net::F_RING_PACKED == 0 && s.num > u32::from(u16::MAX) {
                    return Err(Error::Rejected(format!(
                        "queue {i}: base {} above 65535 on a split ring",
                        s.num
                    )));
                }
                self.stop_queue(i);
                self.vrings[i].base = s.num;
                Ok(Reply::Ack)
            }
            Request::GET_VRING_BASE => {
                expect_fds(0)?;
                let s = VringState::parse(req, body)?;
                let i = self.vring_index(s.index)?;
                self.stop_queue(i);
                let v = &mut self.vrings[i];
                v.started = false;
                v.kick = None;
                let reply = VringState {
                    index: s.index,
                    num: v.base,
                };
                Ok(Reply::Payload(reply.to_bytes().to_vec()))
            }
            Request::SET_VRING_KICK | Request::SET_VRING_CALL | Request::SET_VRING_ERR => {
                let v = parse_u64(req, body)?;
                if v & !(VRING_IDX_MASK | VRING_NOFD_MASK) != 0 {
                    return Err(Error::Invalid("unknown bits in vring fd payload"));
                }
                let nofd = v & VRING_NOFD_MASK != 0;
                expect_fds(usize::from(!nofd))?;
                let i = self.vring_index(u32::from((v & VRING_IDX_MASK) as u8))?;
                let fd = if nofd { None } else { fds.pop() };
                match req {
                    Request::SET_VRING_KICK => {
                        // The kick fd is not polled: the data plane busy-polls the avail ring
                        // and tells the guest not to kick. It is kept so the frontend's fd stays
                        // valid, as the spec expects.
                        self.vrings[i].kick = fd;
                        self.vrings[i].started = true;
                        self.try_start(i);
                    }
                    Request::SET_VRING_CALL => {
                        self.vrings[i].call = fd;
                        // The running queue needs the new call fd: restart it (cheap, and the
                        // only way to change it without a lock on the notify path).
                        if self.stop_queue(i) {
                            self.try_start(i);
                        }
                    }
                    _ => self.vrings[i].err = fd,
                }
                Ok(Reply::Ack)
            }
            Request::SET_VRING_ENABLE => {
                expect_fds(0)?;
                let s = VringState::parse(req, body)?;
                let i = self.vring_index(s.index)?;
                // Valid once protocol features are in use: either the frontend acked the bit, or
                // it negotiated protocol features (QEMU 7.2 does the latter, not the former).
                if self.features & VHOST_USER_F_PROTOCOL_FEATURES == 0 && !self.protocol_set {
                    return Err(Error::Invalid(
                        "SET_VRING_ENABLE without protocol features negotiated",
                    ));
                }
                match s.num {
                    0 => {
                        self.vrings[i].enabled = Some(false);
                        self.stop_queue(i);
                    }
                    1 => {
                        self.vrings[i].enabled = Some(true);
                        self.try_start(i);
                    }
                    n => {
                        return Err(Error::Rejected(format!(
                            "SET_VRING_ENABLE value {n} is neither 0 nor 1"
                        )))
                    }
                }
                Ok(Reply::Ack)
            }
            Request::SET_LOG_BASE => {
                // QEMU waits for a reply whatever REPLY_ACK says and reads any payload; rust-vmm's
                // frontend wants the log region back: echo it.
                let r = self.set_log_base(body, fds)?;
                Ok(Reply::Payload(r.to_bytes().to_vec()))
            }
            Request::SET_LOG_FD => {
                no_body_or_u64(req, body)?;
                self.set_log_fd(fds)?;
                Ok(Reply::Ack)
            }
            Request::SEND_RARP => {
                self.send_rarp(body, nfds)?;
                Ok(Reply::Ack)
            }
            Request::NET_SET_MTU => {
                self.need_protocol(pf::NET_MTU, req)?;
                expect_fds(0)?;
                let mtu = parse_u64(req, body)?;
                if !(68..=9000).contains(&mtu) {
                    return Err(Error::Rejected(format!("MTU {mtu} outside 68..=9000")));
                }
                self.net_config.mtu = u16::try_from(mtu).unwrap_or(9000);
                Ok(Reply::Ack)
            }
            Request::SET_BACKEND_REQ_FD => {
                self.need_protocol(pf::BACKEND_REQ, req)?;
                expect_fds(1)?;
                no_body_or_u64(req, body)?;
                let fd = fds.pop().ok_or(Error::Invalid("no fd"))?;
                self.backend_req = Some(UnixStream::from(fd));
                Ok(Reply::Ack)
            }
            Request::GET_CONFIG => {
                self.need_protocol(pf::CONFIG, req)?;
                expect_fds(0)?;
                let c = ConfigMsg::parse(req, body)?;
                Ok(Reply::Payload(self.get_config(c).to_bytes()))
            }
            Request::SET_CONFIG => {
                self.need_protocol(pf::CONFIG, req)?;
                expect_fds(0)?;
                let c = ConfigMsg::parse(req, body)?;
                self.net_config
                    .write(c.offset as usize, &c.payload)
                    .map_err(Error::Invalid)?;
                Ok(Reply::Ack)
            }
            Request::SET_STATUS => {
                self.need_protocol(pf::STATUS, req)?;
                expect_fds(0)?;
                let s = parse_u64(req, body)?;
                let s = u8::try_from(s)
                    .map_err(|_| Error::Rejected(format!("device status {s:#x} above 0xff")))?;
                if s == 0 {
                    // Writing 0 resets the device (virtio 1.x §2.1).
                    self.reset_device();
                }
                self.status = s;
                Ok(Reply::Ack)
            }
            Request::GET_STATUS => {
                self.need_protocol(pf::STATUS, req)?;
                expect_fds(0)?;
                Ok(Reply::Payload(
                    u64::from(self.status).to_le_bytes().to_vec(),
                ))
            }
            other => Err(Error::Rejected(format!(
                "{} is not supported by this backend",
                other.name()
            ))),
        }
    }

    fn need_protocol(&self, bit: u64, req: Request) -> Result<()> {
        if self.protocol_features & bit == 0 {
            return Err(Error::Rejected(format!(
                "{} needs a protocol feature that was not negotiated",
                req.name()
            )));
        }
        Ok(())
    }

    fn vring_index(&self, index: u32) -> Result<usize> {
        let i = index as usize;
        if i >= self.vrings.len() {
            return Err(Error::Rejected(format!(
                "queue index {index} out of range: this port has {} queues",
                self.vrings.len()
            )));
        }
        Ok(i)
    }
}

pub(super) fn is_get(req: Request) -> bool {
    matches!(
        req,
        Request::GET_FEATURES
            | Request::GET_PROTOCOL_FEATURES
            | Request::GET_QUEUE_NUM
            | Request::GET_VRING_BASE
            | Request::GET_CONFIG
            | Request::GET_MAX_MEM_SLOTS
            | Request::GET_STATUS
    )
}

fn no_body(req: Request, body: &[u8]) -> Result<()> {
    if !body.is_empty() {
        return Err(Error::BadPayloadSize {
            request: req.name(),
            got: body.len(),
            want: 0,
        });
    }
    Ok(())
}

/// Some frontends send a u64 of 0 with requests that carry only an fd.
fn no_body_or_u64(req: Request, body: &[u8]) -> Result<()> {
    if body.is_empty() || body.len() == 8 {
        return Ok(());
    }
    no_body(req, body)
}
