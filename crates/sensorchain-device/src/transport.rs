//! The byte transport and the clock the device loop runs over. (The *link*
//! protocol that runs over a transport is core's [`sensorchain_core::link`].)

/// A bidirectional byte stream to a gateway: a UART, a TCP socket, a USB
/// CDC pipe. The loop frames its messages itself (COBS, `0x00` delimited),
/// so the transport only moves bytes.
pub trait Transport {
    /// Why the link failed (it is down until [`Transport::reconnect`]).
    type Error: core::fmt::Debug;

    /// Writes all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Reads what is available into `buf`, waiting at most `timeout_ms` for
    /// the first byte. `Ok(0)` means nothing arrived in time (the link is
    /// still up); an error means the link is down.
    fn read(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<usize, Self::Error>;

    /// Re-establishes the link after an error or a timeout (reopen a
    /// socket, flush a UART). The default does nothing: a UART has no
    /// connection to re-establish.
    fn reconnect(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl<L: Transport + ?Sized> Transport for &mut L {
    type Error = L::Error;
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        (**self).write_all(bytes)
    }
    fn read(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<usize, Self::Error> {
        (**self).read(buf, timeout_ms)
    }
    fn reconnect(&mut self) -> Result<(), Self::Error> {
        (**self).reconnect()
    }
}

/// Time as the device knows it.
pub trait Clock {
    /// Monotonic milliseconds (since boot is fine): handshake and answer
    /// timeouts.
    fn now_ms(&mut self) -> u64;

    /// Wall-clock milliseconds since the Unix epoch, the timestamp of a
    /// reading. The default is [`Clock::now_ms`]; a board without a
    /// real-time clock adds its uptime to a provisioned or synchronised
    /// epoch. The ledger refuses timestamps more than the chain's skew
    /// (5 minutes by default) ahead of the block; earlier ones are accepted.
    fn unix_ms(&mut self) -> u64 {
        self.now_ms()
    }
}

impl<C: Clock + ?Sized> Clock for &mut C {
    fn now_ms(&mut self) -> u64 {
        (**self).now_ms()
    }
    fn unix_ms(&mut self) -> u64 {
        (**self).unix_ms()
    }
}
