//! TCP relays for what DNS round robin can't carry: fixed RPC ports, IMAP/POP3, HTTPS
//! passthrough and the SMTP relay VIP.

pub mod copy;
pub mod pick;
pub mod refuse;
pub mod server;
pub mod sni;
pub mod transparent;
