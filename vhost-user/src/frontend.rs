//! The vhost-user frontend (driver side): what QEMU or DPDK's virtio-user does to set up a
//! device in a backend. Fast-path guests and the benchmark's built-in guests connect to the switch
//! with it; tests use it as a scripted peer.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::connection::{Connection, Message};
use crate::error::{Error, Result};
use crate::message::{
    mem_table_bytes, parse_u64, protocol_features as pf, ConfigMsg, Header, MemRegionDesc, Request,
    VringAddr, VringState, VHOST_USER_F_PROTOCOL_FEATURES, VRING_NOFD_MASK,
};
use crate::virtq::QueueLayout;

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
}

/// A connection to a vhost-user backend.
pub struct Frontend {
    conn: Connection,
    protocol_features: u64,
}

impl Frontend {
    /// Connects to a backend listening on `path`.
    pub fn connect(path: &Path) -> Result<Frontend> {
        Ok(Frontend::from_stream(UnixStream::connect(path)?))
    }

    pub fn from_stream(s: UnixStream) -> Frontend {
        Frontend {
            conn: Connection::new(s),
            protocol_features: 0,
        }
    }

    /// The underlying connection, for tests that send malformed messages.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn reply_ack(&self) -> bool {
        self.protocol_features & pf::REPLY_ACK != 0
    }

    /// Sends a request that returns nothing; waits for the ack when REPLY_ACK is negotiated.
    fn set(&mut self, req: Request, body: &[u8], fds: &[RawFd]) -> Result<()> {
        let ack = self.reply_ack();
        let h = Header::request(req, body.len(), ack);
        if let Some(reply) = self.conn.request(&h, body, fds, ack)? {
            let v = parse_u64(req, &reply.body)?;
            if v != 0 {
                return Err(Error::NackFromBackend(v, req.name()));
            }
        }
        Ok(())
    }

    /// Sends a request whose reply carries a payload.
    fn get(&mut self, req: Request, body: &[u8]) -> Result<Message> {
        let h = Header::request(req, body.len(), false);
        self.conn
            .request(&h, body, &[], true)?
            .ok_or(Error::Disconnected)
    }

    fn get_u64(&mut self, req: Request) -> Result<u64> {
        let m = self.get(req, &[])?;
        parse_u64(req, &m.body)
    }

    pub fn set_owner(&mut self) -> Result<()> {
        self.set(Request::SET_OWNER, &[], &[])
    }

    pub fn get_features(&mut self) -> Result<u64> {
        self.get_u64(Request::GET_FEATURES)
    }

    pub fn set_features(&mut self, f: u64) -> Result<()> {
        self.set(Request::SET_FEATURES, &f.to_le_bytes(), &[])
    }

    pub fn get_protocol_features(&mut self) -> Result<u64> {
        self.get_u64(Request::GET_PROTOCOL_FEATURES)
    }

    pub fn set_protocol_features(&mut self, f: u64) -> Result<()> {
        self.set(Request::SET_PROTOCOL_FEATURES, &f.to_le_bytes(), &[])?;
        self.protocol_features = f;
        Ok(())
    }

    pub fn get_queue_num(&mut self) -> Result<u64> {
        self.get_u64(Request::GET_QUEUE_NUM)
    }

    pub fn set_mem_table(&mut self, regions: &[(MemRegionDesc, BorrowedFd<'_>)]) -> Result<()> {
        let descs: Vec<MemRegionDesc> = regions.iter().map(|(d, _)| *d).collect();
        let fds: Vec<RawFd> = regions.iter().map(|(_, f)| f.as_raw_fd()).collect();
        self.set(Request::SET_MEM_TABLE, &mem_table_bytes(&descs), &fds)
    }

    pub fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        self.set(
            Request::SET_VRING_NUM,
            &VringState { index, num }.to_bytes(),
            &[],
        )
    }

    pub fn set_vring_base(&mut self, index: u32, num: u32) -> Result<()> {
        self.set(
            Request::SET_VRING_BASE,
            &VringState { index, num }.to_bytes(),
            &[],
        )
    }

    pub fn get_vring_base(&mut self, index: u32) -> Result<u32> {
        let m = self.get(
            Request::GET_VRING_BASE,
            &VringState { index, num: 0 }.to_bytes(),
        )?;
        Ok(VringState::parse(Request::GET_VRING_BASE, &m.body)?.num)
    }

    pub fn set_vring_addr(&mut self, index: u32, l: &QueueLayout) -> Result<()> {
        let a = VringAddr {
            index,
            flags: 0,
            desc: l.desc_uva,
            used: l.used_uva,
            avail: l.avail_uva,
            log: 0,
        };
        self.set(Request::SET_VRING_ADDR, &a.to_bytes(), &[])
    }

    /// `SET_VRING_ADDR` with `VHOST_VRING_F_LOG`: used-ring writes logged at `log_gpa`.
    pub fn set_vring_addr_logged(
        &mut self,
        index: u32,
        l: &QueueLayout,
        log_gpa: u64,
    ) -> Result<()> {
        let a = VringAddr {
            index,
            flags: crate::message::VRING_ADDR_F_LOG,
            desc: l.desc_uva,
            used: l.used_uva,
            avail: l.avail_uva,
            log: log_gpa,
        };
        self.set(Request::SET_VRING_ADDR, &a.to_bytes(), &[])
    }

    /// `SET_LOG_BASE` with the log's fd (LOG_SHMFD); waits for the backend's empty reply.
    pub fn set_log_base(&mut self, size: u64, offset: u64, fd: BorrowedFd<'_>) -> Result<()> {
        let body = crate::message::LogRegion {
            mmap_size: size,
            mmap_offset: offset,
        }
        .to_bytes();
        let h = Header::request(Request::SET_LOG_BASE, body.len(), false);
        self.conn
            .request(&h, &body, &[fd.as_raw_fd()], true)?
            .ok_or(Error::Disconnected)?;
        Ok(())
    }

    pub fn set_log_fd(&mut self, fd: BorrowedFd<'_>) -> Result<()> {
        self.set(Request::SET_LOG_FD, &[], &[fd.as_raw_fd()])
    }

    /// `SEND_RARP`: asks the backend to announce `mac` (the guest arrived after a migration).
    pub fn send_rarp(&mut self, mac: [u8; 6]) -> Result<()> {
        self.set(Request::SEND_RARP, &crate::message::rarp_bytes(mac), &[])
    }

    fn set_vring_fd(&mut self, req: Request, index: u8, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let mut v = u64::from(index);
        let fds: Vec<RawFd> = match fd {
            Some(f) => vec![f.as_raw_fd()],
            None => {
                v |= VRING_NOFD_MASK;
                vec![]
            }
        };
        self.set(req, &v.to_le_bytes(), &fds)
    }

    pub fn set_vring_kick(&mut self, index: u8, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        self.set_vring_fd(Request::SET_VRING_KICK, index, fd)
    }

    pub fn set_vring_call(&mut self, index: u8, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        self.set_vring_fd(Request::SET_VRING_CALL, index, fd)
    }

    pub fn set_vring_enable(&mut self, index: u32, on: bool) -> Result<()> {
        self.set(
            Request::SET_VRING_ENABLE,
            &VringState {
                index,
                num: u32::from(on),
            }
            .to_bytes(),
            &[],
        )
    }

    pub fn set_status(&mut self, s: u8) -> Result<()> {
        self.set(Request::SET_STATUS, &u64::from(s).to_le_bytes(), &[])
    }

    pub fn get_status(&mut self) -> Result<u8> {
        Ok(u8::try_from(self.get_u64(Request::GET_STATUS)?).unwrap_or(u8::MAX))
    }

    pub fn get_config(&mut self, offset: u32, size: u32) -> Result<Vec<u8>> {
        let c = ConfigMsg {
            offset,
            size,
            flags: 0,
            payload: vec![0; size as usize],
        };
        let m = self.get(Request::GET_CONFIG, &c.to_bytes())?;
        Ok(ConfigMsg::parse(Request::GET_CONFIG, &m.body)?.payload)
    }

    /// The whole virtio-net setup a guest driver performs: negotiate `want` features (masked by
    /// what the backend offers) and the protocol features we use, map `regions`, and start each
    /// queue `(index, layout, call fd)`. Returns the negotiated features.
    pub fn setup_net(
        &mut self,
        want: u64,
        regions: &[(MemRegionDesc, BorrowedFd<'_>)],
        queues: &[(u32, QueueLayout, Option<BorrowedFd<'_>>)],
    ) -> Result<u64> {
        let offered = self.get_features()?;
        if offered & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            let p = self.get_protocol_features()?;
            let use_p =
                p & (pf::REPLY_ACK | pf::MQ | pf::STATUS | pf::CONFIG | pf::LOG_SHMFD | pf::RARP);
            self.set_protocol_features(use_p)?;
        }
        self.set_owner()?;
        let features = want & offered;
        self.set_features(features)?;
        if self.protocol_features & pf::STATUS != 0 {
            self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK)?;
        }
        self.set_mem_table(regions)?;
        for (index, layout, call) in queues {
            self.set_vring_num(*index, u32::from(layout.size))?;
            self.set_vring_base(*index, 0)?;
            self.set_vring_addr(*index, layout)?;
            let idx = u8::try_from(*index)
                .map_err(|_| Error::Rejected(format!("queue index {index} above 255")))?;
            self.set_vring_call(idx, *call)?;
            // Polling backend: no kick eventfd needed.
            self.set_vring_kick(idx, None)?;
            if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
                self.set_vring_enable(*index, true)?;
            }
        }
        if self.protocol_features & pf::STATUS != 0 {
            self.set_status(
                status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
            )?;
        }
        Ok(features)
    }
}
