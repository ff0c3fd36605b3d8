//! MultiChain-style permissions and Fabric-style roles.
//!
//! | bit | name | meaning |
//! |---|---|---|
//! | `0x01` | `CONNECT` | may complete the handshake with a gateway and keep a session |
//! | `0x02` | `SEND` | may submit its own non-reading transactions (a patient's consent) |
//! | `0x04` | `RECEIVE` | may be a reader of sealed readings (a recipient) |
//! | `0x08` | `WRITE` | may write readings to the chain (a sensor) |
//! | `0x10` | `ADMIN` | may grant and revoke permissions, set roles, assign devices |
//! | `0x20` | `VALIDATE` | may propose blocks and sign finality certificates (a gateway; MultiChain's `mine`) |
//! | `0x40` | `AUDIT` | may read whole block bodies through a gateway's API (an auditor), every read logged; added by issue 14, a bit that was reserved (and refused) before, so no earlier block changes meaning |
//!
//! Bit `0x80` is reserved and must be zero. Granting or revoking `ADMIN`,
//! `VALIDATE` or `AUDIT` takes the votes of a configurable fraction of the
//! admins (admin consensus: reading every block body is as weighty as
//! validating); the other bits take one admin.

use core::fmt;
use serde::{Deserialize, Serialize};

/// A set of permission bits (see the module table).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Permissions(pub u8);

impl Permissions {
    /// No permission.
    pub const NONE: Permissions = Permissions(0);
    /// Handshake with a gateway.
    pub const CONNECT: Permissions = Permissions(0x01);
    /// Submit own non-reading transactions.
    pub const SEND: Permissions = Permissions(0x02);
    /// Be a reader of sealed readings.
    pub const RECEIVE: Permissions = Permissions(0x04);
    /// Write readings.
    pub const WRITE: Permissions = Permissions(0x08);
    /// Administer permissions, roles and devices.
    pub const ADMIN: Permissions = Permissions(0x10);
    /// Propose and finalise blocks.
    pub const VALIDATE: Permissions = Permissions(0x20);
    /// Read whole block bodies through a gateway's API (an auditor).
    pub const AUDIT: Permissions = Permissions(0x40);
    /// Every defined bit.
    pub const ALL: Permissions = Permissions(0x7f);
    /// The bits whose change needs admin consensus.
    pub const CONSENSUS: Permissions = Permissions(0x70);

    /// The union of two sets.
    pub const fn union(self, o: Permissions) -> Permissions {
        Permissions(self.0 | o.0)
    }
    /// The bits of `self` not in `o`.
    pub const fn without(self, o: Permissions) -> Permissions {
        Permissions(self.0 & !o.0)
    }
    /// The bits in both.
    pub const fn intersect(self, o: Permissions) -> Permissions {
        Permissions(self.0 & o.0)
    }
    /// True if every bit of `o` is set.
    pub const fn contains(self, o: Permissions) -> bool {
        self.0 & o.0 == o.0
    }
    /// True if no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// True if only defined bits are set.
    pub const fn is_valid(self) -> bool {
        self.0 & !Self::ALL.0 == 0
    }
    /// Iterates over the single bits that are set.
    pub fn bits(self) -> impl Iterator<Item = Permissions> {
        (0..7)
            .map(|i| Permissions(1 << i))
            .filter(move |b| self.contains(*b))
    }

    /// Parses a comma-separated list such as `connect,write`.
    ///
    /// ```
    /// # use sensorchain_core::permissions::Permissions;
    /// let p: Permissions = "connect,write".parse().unwrap();
    /// assert_eq!(p, Permissions::CONNECT.union(Permissions::WRITE));
    /// assert_eq!(p.to_string(), "connect,write");
    /// ```
    pub fn parse_list(s: &str) -> Option<Permissions> {
        let mut p = Permissions::NONE;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            p = p.union(match name {
                "connect" => Self::CONNECT,
                "send" => Self::SEND,
                "receive" => Self::RECEIVE,
                "write" => Self::WRITE,
                "admin" => Self::ADMIN,
                "validate" | "mine" => Self::VALIDATE,
                "audit" => Self::AUDIT,
                "all" => Self::ALL,
                _ => return None,
            });
        }
        Some(p)
    }
}

impl core::str::FromStr for Permissions {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Permissions::parse_list(s).ok_or(UnknownName)
    }
}

/// A permission or role name that is not defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnknownName;

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown name (permissions: connect, send, receive, write, admin, validate, audit; roles: device, patient, doctor, nurse, insurer, admin, gateway, auditor)")
    }
}

impl core::error::Error for UnknownName {}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 7] = [
            "connect", "send", "receive", "write", "admin", "validate", "audit",
        ];
        let mut first = true;
        for (i, n) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions({self})")
    }
}

/// The actor an identity is, for the access rules (Fabric-style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// A sensor: writes readings about the patient it is assigned to.
    Device,
    /// A patient: owns the readings of the devices assigned to them and
    /// grants or revokes readers by consent.
    Patient,
    /// A doctor: reads a patient's readings with that patient's consent.
    Doctor,
    /// A nurse: reads a patient's readings with that patient's consent.
    Nurse,
    /// An insurer: reads nothing unless the patient consents.
    Insurer,
    /// An administrator of the network.
    Admin,
    /// A gateway (validator).
    Gateway,
    /// An auditor: reads block bodies (with `AUDIT`) to check the chain,
    /// every read logged; reads no patient's readings list.
    Auditor,
}

impl Role {
    /// Every role, in encoding order.
    pub const ALL: [Role; 8] = [
        Role::Device,
        Role::Patient,
        Role::Doctor,
        Role::Nurse,
        Role::Insurer,
        Role::Admin,
        Role::Gateway,
        Role::Auditor,
    ];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Nurse => "nurse",
            Role::Insurer => "insurer",
            Role::Admin => "admin",
            Role::Gateway => "gateway",
            Role::Auditor => "auditor",
        }
    }

    /// True for roles that may be granted read access by a patient's consent.
    pub fn may_receive_consent(self) -> bool {
        matches!(self, Role::Doctor | Role::Nurse | Role::Insurer)
    }

    /// The permissions an identity of this role usually holds (what
    /// `sensorchain genesis` and the demo grant).
    pub fn default_permissions(self) -> Permissions {
        use Permissions as P;
        match self {
            Role::Device => P::CONNECT.union(P::WRITE),
            Role::Patient => P::CONNECT.union(P::SEND).union(P::RECEIVE),
            Role::Doctor | Role::Nurse | Role::Insurer => P::CONNECT.union(P::RECEIVE),
            Role::Admin => P::CONNECT.union(P::SEND).union(P::ADMIN),
            Role::Gateway => P::CONNECT.union(P::VALIDATE),
            Role::Auditor => P::CONNECT.union(P::AUDIT),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s.trim())
            .ok_or(UnknownName)
    }
}
