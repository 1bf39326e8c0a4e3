//! The relay backend rule: what a relay may do with one of its servers, from the server's admin
//! state and whether it fails one of the relay's checks. Pure, and unit-tested as a table.

use super::view::BackendView;
use crate::config::relay::OnServerDown;
use crate::config::AdminState;

/// A backend takes new connections when it is `ready` and passes every check of its relay (no
/// result yet counts as passing: the start-up round comes first). Its open connections are
/// closed when it is in `maint`, or when it fails a check and the relay says
/// `on_server_down = "close"`; `drain` keeps them.
pub(super) fn backend_view(admin: AdminState, failing: bool, on_down: OnServerDown) -> BackendView {
    BackendView {
        usable: admin == AdminState::Ready && !failing,
        close: admin == AdminState::Maint || (failing && on_down == OnServerDown::Close),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_as_a_table() {
        use AdminState::{Drain, Maint, Ready};
        use OnServerDown::{Close, Keep};
        // (admin, failing, on_server_down) → (usable, close)
        let table = [
            (Ready, false, Keep, true, false),
            (Ready, false, Close, true, false),
            (Ready, true, Keep, false, false),
            (Ready, true, Close, false, true),
            (Drain, false, Keep, false, false),
            (Drain, true, Keep, false, false),
            (Drain, true, Close, false, true),
            (Maint, false, Keep, false, true),
            (Maint, true, Keep, false, true),
            (Maint, false, Close, false, true),
        ];
        for (admin, failing, on_down, usable, close) in table {
            let v = backend_view(admin, failing, on_down);
            assert_eq!(
                (v.usable, v.close),
                (usable, close),
                "{admin:?} failing={failing} {on_down:?}"
            );
        }
    }
}
