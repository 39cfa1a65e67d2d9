//! Choosing a notification strategy per channel: by name (configuration), with a check that
//! this machine can run it, and building the notifier for one side of the channel.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::sys::{futex, waitpkg::Waitpkg};
use crate::{
    AdaptiveNotifier, Error, EventFd, EventFdNotifier, FutexNotifier, Notifier, SharedWord,
    SpinNotifier, UmwaitNotifier,
};

/// How a receiver waits (and, for `eventfd`, how a sender notifies).
///
/// The word-based strategies (`spin`, `futex`, `umwait`, `adaptive`) notify identically, so
/// each side may pick its own; only `eventfd` needs both sides to agree (and to share the fd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// PAUSE loop on the shared word ([`SpinNotifier`]).
    Spin,
    /// FUTEX_WAIT / FUTEX_WAKE on the shared word ([`FutexNotifier`]).
    Futex,
    /// UMONITOR / UMWAIT on the shared word, CPUs with WAITPKG only ([`UmwaitNotifier`]).
    Umwait,
    /// An eventfd, as vhost-user kicks and calls ([`EventFdNotifier`]).
    EventFd,
    /// Poll for a budget, then sleep in FUTEX_WAIT ([`AdaptiveNotifier`]).
    Adaptive,
}

impl Strategy {
    /// Every strategy this crate knows, available here or not.
    pub const ALL: [Strategy; 5] = [
        Strategy::Spin,
        Strategy::Futex,
        Strategy::Umwait,
        Strategy::EventFd,
        Strategy::Adaptive,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Spin => "spin",
            Strategy::Futex => "futex",
            Strategy::Umwait => "umwait",
            Strategy::EventFd => "eventfd",
            Strategy::Adaptive => "adaptive",
        }
    }

    /// The strategy with this name, available here or not.
    pub fn by_name(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the receiver keeps its CPU while it waits (all of the wait, or its polling
    /// budget): the scheduler sees it running. Tests and benchmarks of these take the heavy
    /// lock.
    pub fn polls(self) -> bool {
        matches!(self, Strategy::Spin | Strategy::Umwait | Strategy::Adaptive)
    }

    /// Ok if this machine can run the strategy; otherwise [`Error::Unavailable`] saying why.
    pub fn check_available(self) -> Result<(), Error> {
        let probe = Probe::get();
        let missing = match self {
            Strategy::Spin => None,
            Strategy::Futex | Strategy::Adaptive => {
                (!probe.futex).then_some("futex(2) is refused here (seccomp?)")
            }
            Strategy::Umwait => (!probe.waitpkg).then_some(crate::umwait::UNAVAILABLE),
            Strategy::EventFd => (!probe.eventfd).then_some("eventfd(2) is refused here"),
        };
        match missing {
            None => Ok(()),
            Some(reason) => Err(Error::Unavailable {
                strategy: self.name(),
                reason,
            }),
        }
    }

    pub fn is_available(self) -> bool {
        self.check_available().is_ok()
    }

    /// The strategies this machine can run, in [`Strategy::ALL`] order.
    pub fn available() -> Vec<Strategy> {
        Strategy::ALL
            .into_iter()
            .filter(|s| s.is_available())
            .collect()
    }

    /// Builds one side's notifier. Word-based strategies use `word` (a slot both sides map);
    /// `eventfd` uses `eventfd` and fails with [`Error::NeedsEventFd`] without one. `adaptive`
    /// polls for [`AdaptiveNotifier::DEFAULT_BUDGET`]; build [`AdaptiveNotifier::new`] directly
    /// for another budget.
    pub fn build(
        self,
        word: &SharedWord,
        eventfd: Option<&EventFd>,
    ) -> Result<Box<dyn Notifier>, Error> {
        self.check_available()?;
        Ok(match self {
            Strategy::Spin => Box::new(SpinNotifier::new(word.clone())),
            Strategy::Futex => Box::new(FutexNotifier::new(word.clone())),
            Strategy::Umwait => Box::new(UmwaitNotifier::new(word.clone())?),
            Strategy::EventFd => Box::new(EventFdNotifier::new(
                eventfd.ok_or(Error::NeedsEventFd)?.clone(),
            )),
            Strategy::Adaptive => Box::new(AdaptiveNotifier::new(
                word.clone(),
                AdaptiveNotifier::DEFAULT_BUDGET,
            )),
        })
    }
}

/// Parses a configuration name; unknown names and strategies this machine cannot run are
/// errors that list the choices.
impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Strategy, Error> {
        let name = s.trim().to_ascii_lowercase();
        let strategy = Strategy::by_name(&name).ok_or(Error::UnknownStrategy { name })?;
        strategy.check_available()?;
        Ok(strategy)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What this machine offers, probed once.
struct Probe {
    futex: bool,
    waitpkg: bool,
    eventfd: bool,
}

impl Probe {
    fn get() -> &'static Probe {
        static PROBE: OnceLock<Probe> = OnceLock::new();
        PROBE.get_or_init(|| Probe {
            futex: futex::works(),
            waitpkg: Waitpkg::detect().is_some(),
            eventfd: EventFd::new().is_ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_available_name() {
        for s in Strategy::available() {
            assert_eq!(s.name().parse::<Strategy>().expect("available"), s);
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!(
            " Futex ".parse::<Strategy>().expect("futex"),
            Strategy::Futex
        );
    }

    #[test]
    fn test_unknown_name_is_an_error_listing_the_choices() {
        let e = "mwait".parse::<Strategy>().expect_err("unknown");
        assert!(matches!(e, Error::UnknownStrategy { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("`mwait`"), "{msg}");
        for s in Strategy::ALL {
            assert!(msg.contains(s.name()), "{msg}");
        }
    }

    #[test]
    fn spin_futex_eventfd_and_adaptive_are_available_on_linux() {
        let a = Strategy::available();
        for s in [
            Strategy::Spin,
            Strategy::Futex,
            Strategy::EventFd,
            Strategy::Adaptive,
        ] {
            assert!(a.contains(&s), "{s} missing from {a:?}");
        }
    }

    #[test]
    fn test_umwait_without_waitpkg_is_unavailable_with_a_reason() {
        if Waitpkg::detect().is_some() {
            assert!(Strategy::available().contains(&Strategy::Umwait));
            assert_eq!(
                "umwait".parse::<Strategy>().expect("umwait"),
                Strategy::Umwait
            );
            return;
        }
        assert!(!Strategy::available().contains(&Strategy::Umwait));
        let e = "umwait".parse::<Strategy>().expect_err("unavailable");
        let msg = e.to_string();
        assert!(msg.contains("WAITPKG") && msg.contains("futex"), "{msg}");
        let built = Strategy::Umwait.build(&SharedWord::private(), None);
        assert!(matches!(built, Err(Error::Unavailable { .. })));
        assert!(matches!(
            UmwaitNotifier::new(SharedWord::private()),
            Err(Error::Unavailable { .. })
        ));
    }

    #[test]
    fn test_eventfd_without_an_fd_is_an_error() {
        let r = Strategy::EventFd.build(&SharedWord::private(), None);
        assert!(matches!(r, Err(Error::NeedsEventFd)));
        let efd = EventFd::new().expect("eventfd");
        let n = Strategy::EventFd
            .build(&SharedWord::private(), Some(&efd))
            .expect("build");
        assert_eq!(n.name(), "eventfd");
    }

    #[test]
    fn built_notifiers_report_their_strategy_name() {
        let efd = EventFd::new().expect("eventfd");
        for s in Strategy::available() {
            let n = s.build(&SharedWord::private(), Some(&efd)).expect("build");
            assert_eq!(n.name(), s.name());
        }
    }
}
