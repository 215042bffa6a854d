//! What the relay knows about channels: only what policy needs. Channel
//! numbers, windows and requests stay end to end between the user's client
//! and connect-client; the proxy counts opens against
//! `CONNECT_SSH_MAX_CONN_CHANNELS` (from both sides, pending ones too),
//! knows which user-side numbers are sessions (to tell their users when the
//! Studio is lost) and forgets a channel once it is closed both ways.

/// Who opened a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    User,
    Studio,
}

#[derive(Debug, Clone)]
struct Channel {
    opener: Opener,
    /// The user's number for it (known at open for user-opened channels,
    /// at confirmation for Studio-opened ones).
    user_id: Option<u32>,
    studio_id: Option<u32>,
    session: bool,
    closed_by_user: bool,
    closed_by_studio: bool,
}

/// The channels of one relayed connection.
#[derive(Debug, Default)]
pub struct Channels {
    /// Invariant: at most `limit` entries; few enough that a linear scan
    /// beats a map.
    open: Vec<Channel>,
}

impl Channels {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// A CHANNEL_OPEN from `opener` with its sender number.
    pub fn opened(&mut self, opener: Opener, sender: u32, session: bool) {
        let (user_id, studio_id) = match opener {
            Opener::User => (Some(sender), None),
            Opener::Studio => (None, Some(sender)),
        };
        self.open.push(Channel {
            opener,
            user_id,
            studio_id,
            session,
            closed_by_user: false,
            closed_by_studio: false,
        });
    }

    fn pending(&mut self, opener: Opener, id: u32) -> Option<usize> {
        self.open.iter().position(|c| {
            c.opener == opener
                && match opener {
                    Opener::User => c.user_id == Some(id) && c.studio_id.is_none(),
                    Opener::Studio => c.studio_id == Some(id) && c.user_id.is_none(),
                }
        })
    }

    /// A confirmation from the side that did not open: `recipient` is the
    /// opener's number, `sender` the confirmer's.
    pub fn confirmed(&mut self, confirmer: Opener, recipient: u32, sender: u32) {
        let opener = other(confirmer);
        if let Some(i) = self.pending(opener, recipient) {
            match confirmer {
                Opener::Studio => self.open[i].studio_id = Some(sender),
                Opener::User => self.open[i].user_id = Some(sender),
            }
        }
    }

    /// An open failure from the side that did not open: the slot is free.
    pub fn refused(&mut self, refuser: Opener, recipient: u32) -> bool {
        match self.pending(other(refuser), recipient) {
            Some(i) => {
                self.open.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// CHANNEL_CLOSE from `closer`, addressed to the other side's number.
    /// Returns true when the channel is now closed both ways and forgotten.
    pub fn closed(&mut self, closer: Opener, recipient: u32) -> bool {
        let i = self.open.iter().position(|c| match closer {
            Opener::User => c.studio_id == Some(recipient),
            Opener::Studio => c.user_id == Some(recipient),
        });
        let Some(i) = i else { return false };
        let c = &mut self.open[i];
        match closer {
            Opener::User => c.closed_by_user = true,
            Opener::Studio => c.closed_by_studio = true,
        }
        if c.closed_by_user && c.closed_by_studio {
            self.open.swap_remove(i);
            return true;
        }
        false
    }

    /// The user's numbers of session channels the Studio has not closed:
    /// the ones whose users must hear that the Studio is gone.
    pub fn live_sessions(&self) -> impl Iterator<Item = u32> + '_ {
        self.open
            .iter()
            .filter(|c| c.session && !c.closed_by_studio && c.studio_id.is_some())
            .filter_map(|c| c.user_id)
    }
}

fn other(o: Opener) -> Opener {
    match o {
        Opener::User => Opener::Studio,
        Opener::Studio => Opener::User,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_from_both_sides_are_counted_until_closed_both_ways() {
        let mut c = Channels::default();
        c.opened(Opener::User, 0, true);
        c.opened(Opener::Studio, 7, false);
        assert_eq!(c.len(), 2);
        c.confirmed(Opener::Studio, 0, 100);
        c.confirmed(Opener::User, 7, 1);
        assert_eq!(c.live_sessions().collect::<Vec<_>>(), vec![0]);
        assert!(!c.closed(Opener::User, 100));
        assert!(c.closed(Opener::Studio, 0));
        assert_eq!(c.len(), 1);
        // A refused open frees its slot; a stray refusal changes nothing.
        c.opened(Opener::User, 3, false);
        assert!(c.refused(Opener::Studio, 3));
        assert!(!c.refused(Opener::Studio, 3));
        assert_eq!(c.len(), 1);
    }
}
