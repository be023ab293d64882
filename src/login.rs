//! One login policy for both protocols. [`log_in`] runs the whole sequence
//! — the network's turn, the lockout gate, routing, connecting to the
//! provider, authenticating, charging the right allowance, counting — and
//! returns one [`Outcome`]. SMTP and IMAP only bring what differs (how to
//! connect and authenticate, through [`Provider`]) and render the outcome
//! in their own words.
//!
//! Charges follow one rule: a refusal that judged the credentials is
//! charged to the login and its network, and is answered no sooner than
//! `auth_failure_delay`; a failure that did not judge them (temporary, or
//! the provider lost mid-login) is charged to the network only. Nothing
//! here logs.
//!
//! Members only (`[access]`): a login not on the list is refused before any
//! provider is contacted, and every permanent failure — not a member, a
//! password the provider refused, no provider for the login, a mechanism
//! the provider lacks — becomes one [`Outcome::Denied`], charged and
//! delayed alike, so that the reply cannot tell a member from a stranger.
//! What happens before the list is consulted (lockouts, the provider's
//! budget, Tor still starting) is answered the same for both.

use crate::admission::{LoginGate, Peer};
use crate::config::{EgressMode, Endpoint, Upstream};
use crate::egress::{EgressError, IsolationKey};
use crate::provider::{Target, UpstreamError};
use crate::relay::Relay;
use crate::sasl::Credentials;
use crate::stats::Counter;

/// What a protocol brings to a login.
pub(crate) trait Provider {
    /// The open provider session a successful login hands over.
    type Session;
    /// The provider's verdict, as the client is to be shown it.
    type Reply;

    /// This protocol's endpoints of `upstream`, in order (empty when it
    /// has none).
    fn endpoints(upstream: &Upstream) -> &[Endpoint];

    /// Connects to the first reachable endpoint and greets the provider;
    /// says which endpoint it is.
    fn connect<'t>(
        &mut self,
        target: &Target<'t>,
    ) -> impl Future<Output = Result<(Self::Session, &'t Endpoint), UpstreamError>> + Send;

    /// Presents the credentials and reads the verdict.
    fn authenticate(
        &mut self,
        session: &mut Self::Session,
        credentials: Credentials,
    ) -> impl Future<Output = Result<Verdict<Self::Reply>, UpstreamError>> + Send;

    /// Ends a session whose login did not succeed.
    fn close(&mut self, session: Self::Session) -> impl Future<Output = ()> + Send;
}

/// The provider's answer to the credentials.
pub(crate) enum Verdict<R> {
    /// Accepted.
    Accepted(R),
    /// Refused; `temporary` when the credentials were not judged.
    Refused {
        /// The provider's reply.
        reply: R,
        /// The refusal does not judge the password (try again later).
        temporary: bool,
    },
    /// The provider said it is going away.
    Lost,
    /// The provider offers nothing that can carry these credentials.
    Unsupported,
    /// The client went away while the provider was asking it something.
    Abandoned,
}

/// Why the provider could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreachable {
    /// Its TLS (certificate, protocol, no STARTTLS) failed.
    Tls,
    /// The embedded Tor client is still bootstrapping.
    TorNotReady,
    /// The network, the proxy or Tor failed.
    Network,
}

impl From<&UpstreamError> for Unreachable {
    fn from(e: &UpstreamError) -> Self {
        match e {
            UpstreamError::Tls(_) | UpstreamError::NoStartTls => Unreachable::Tls,
            UpstreamError::Egress(EgressError::TorNotReady) => Unreachable::TorNotReady,
            _ => Unreachable::Network,
        }
    }
}

/// How a login ended.
pub(crate) enum Outcome<S, R> {
    /// The provider accepted: its session and its reply.
    Accepted {
        /// The provider session, authenticated.
        session: S,
        /// The provider's reply.
        reply: R,
        /// Which upstream it is.
        upstream: usize,
    },
    /// The provider refused.
    Refused {
        /// The provider's reply.
        reply: R,
        /// The credentials were not judged.
        temporary: bool,
    },
    /// The login or its network is locked out; the provider was not asked.
    Locked,
    /// No upstream serves this login for this protocol.
    NoRoute,
    /// The provider could not be reached.
    Unreachable(Unreachable),
    /// The provider went away or fell silent mid-login.
    Lost,
    /// The provider cannot take these credentials.
    Unsupported,
    /// The client went away mid-login.
    Abandoned,
    /// The relay needed the session's place while it waited for its turn.
    Evicted,
    /// The pre-authentication deadline passed while it waited for its turn.
    TooSlow,
    /// The provider's hourly budget of failed logins is spent and this
    /// network failed lately: refused at once, the provider not asked.
    ProviderBudget,
    /// Members only: refused with the relay's one text, whether the login
    /// is not a member or the provider refused it for good.
    Denied,
}

/// Which allowance a login attempt is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Nothing.
    Nothing,
    /// The login and its network: the credentials were judged wrong.
    LoginAndNetwork,
    /// The network only: the credentials were not judged.
    Network,
}

impl<S, R> Outcome<S, R> {
    /// True when the client should try again later with the same
    /// credentials.
    pub(crate) fn is_temporary(&self) -> bool {
        match self {
            Outcome::Refused { temporary, .. } => *temporary,
            Outcome::Locked
            | Outcome::ProviderBudget
            | Outcome::Unreachable(_)
            | Outcome::Lost
            | Outcome::Abandoned
            | Outcome::Evicted
            | Outcome::TooSlow => true,
            Outcome::Accepted { .. }
            | Outcome::NoRoute
            | Outcome::Unsupported
            | Outcome::Denied => false,
        }
    }

    /// The counter this outcome adds one to.
    pub(crate) fn counter(&self) -> Option<Counter> {
        Some(match self {
            Outcome::Accepted { .. } => Counter::Login,
            Outcome::Refused { .. } => Counter::LoginRefusedByProvider,
            Outcome::Locked | Outcome::ProviderBudget => Counter::LoginLocked,
            Outcome::NoRoute => Counter::LoginNoRoute,
            Outcome::Unreachable(Unreachable::TorNotReady) => Counter::TorNotReady,
            Outcome::Unreachable(Unreachable::Tls) => Counter::ProviderTlsFailed,
            Outcome::Unreachable(_) => Counter::ProviderUnreachable,
            Outcome::Lost => Counter::ProviderLost,
            // The session's own end (eviction, deadline) is counted there;
            // a denial, by what it was before it became one.
            Outcome::Denied
            | Outcome::Unsupported
            | Outcome::Abandoned
            | Outcome::Evicted
            | Outcome::TooSlow => {
                return None;
            }
        })
    }

    /// The allowance it is charged to. A lockout is not charged, so that
    /// it ends even while a client (perhaps the owner's own, with the right
    /// password) keeps retrying.
    /// Only what a provider judged counts against the login: a login no
    /// upstream serves was judged by nobody, and counts against the network
    /// only (it is still answered like a wrong password).
    pub(crate) fn charge(&self) -> Charge {
        match self {
            Outcome::Refused { .. } | Outcome::Lost if self.is_temporary() => Charge::Network,
            Outcome::NoRoute => Charge::Network,
            Outcome::Refused { .. } | Outcome::Denied => Charge::LoginAndNetwork,
            _ => Charge::Nothing,
        }
    }

    /// True when the answer waits out the failure delay: every answer that
    /// could tell a right password from a wrong one looks alike in time.
    pub(crate) fn delayed(&self) -> bool {
        matches!(
            self,
            Outcome::Refused {
                temporary: false,
                ..
            } | Outcome::NoRoute
                | Outcome::Locked
                | Outcome::Denied
        )
    }
}

/// Runs the login policy for `credentials` on behalf of `peer`, whose
/// session must have logged in by `preauth_deadline`.
pub(crate) async fn log_in<P: Provider>(
    relay: &Relay,
    peer: &mut Peer,
    credentials: Credentials,
    provider: &mut P,
    preauth_deadline: tokio::time::Instant,
) -> Outcome<P::Session, P::Reply> {
    let login = credentials.login();
    // Waiting for a turn is bounded like any wait before login.
    let _turn = tokio::select! {
        turn = peer.auth_turn(&login) => turn,
        () = peer.evicted() => return Outcome::Evicted,
        () = tokio::time::sleep_until(preauth_deadline) => return Outcome::TooSlow,
    };
    let failure_at = tokio::time::Instant::now() + relay.config.limits.auth_failure_delay;
    let route = relay.config.route(login.expose());
    let members_only = relay.members.is_some();
    let stranger = relay.members.as_ref().is_some_and(|m| !m.contains(&login));
    let outcome = if peer.login_gate(&login) == LoginGate::Locked {
        Outcome::Locked
    } else if route.is_some_and(|i| peer.provider_gate(&login, i) == LoginGate::Locked) {
        Outcome::ProviderBudget
    } else if stranger {
        relay.stats.count(Counter::LoginNotMember);
        // A member routed through Tor would be told to wait for it: so is
        // a stranger with the same route.
        if waits_for_tor::<P>(relay, route) {
            Outcome::Unreachable(Unreachable::TorNotReady)
        } else {
            Outcome::Denied
        }
    } else {
        attempt(relay, &login, route, credentials, provider).await
    };
    if let Some(counter) = outcome.counter() {
        relay.stats.count(counter);
    }
    // Members only: a missing mechanism or route is charged like a wrong
    // password, and a stranger's refusal spends the provider's failure
    // budget like a member's, so that neither lockouts nor the budget move
    // differently for the two.
    let charge = match &outcome {
        Outcome::Unsupported | Outcome::NoRoute if members_only => Charge::LoginAndNetwork,
        other => other.charge(),
    };
    match charge {
        Charge::LoginAndNetwork => {
            peer.login_failed(&login);
            let spends_budget = match &outcome {
                Outcome::Refused { .. } => true,
                Outcome::Denied | Outcome::Unsupported => members_only,
                _ => false,
            };
            if let (Some(upstream), true) = (route, spends_budget) {
                peer.provider_refused(upstream);
            }
        }
        Charge::Network => {
            peer.login_failed_temporarily();
            // A refusal the relay saw as temporary may still have been
            // judged (Postfix gives up on a slow Dovecot, which goes on to
            // count the failure against the relay's address): it counts
            // against the provider's budget too.
            if let (Some(upstream), Outcome::Refused { .. } | Outcome::Lost) = (route, &outcome) {
                peer.provider_refused(upstream);
            }
        }
        Charge::Nothing => {}
    }
    if let Outcome::Accepted { .. } = outcome {
        peer.logged_in(&login);
    }
    let outcome = if members_only {
        uniform(outcome)
    } else {
        outcome
    };
    if outcome.delayed() {
        tokio::time::sleep_until(failure_at).await;
    }
    outcome
}

/// Members only: what the client is told. Every permanent failure becomes
/// the one [`Outcome::Denied`]; a temporary refusal loses the provider's
/// words (a hint such as "password transition needed" would name a member
/// as surely as the refusal itself).
fn uniform<S, R>(outcome: Outcome<S, R>) -> Outcome<S, R> {
    match outcome {
        Outcome::Refused {
            temporary: false, ..
        }
        | Outcome::NoRoute
        | Outcome::Unsupported => Outcome::Denied,
        Outcome::Refused {
            temporary: true, ..
        } => Outcome::Unreachable(Unreachable::Network),
        other => other,
    }
}

/// True when a login routed to `route` would go through the embedded Tor
/// client for this protocol, and that client is still starting.
fn waits_for_tor<P: Provider>(relay: &Relay, route: Option<usize>) -> bool {
    let Some(first) = route.and_then(|i| P::endpoints(&relay.config.upstreams[i]).first()) else {
        return false;
    };
    first.egress == EgressMode::Tor && relay.egress.tor_starting()
}

/// Connects to the routed upstream and authenticates.
async fn attempt<P: Provider>(
    relay: &Relay,
    login: &crate::privacy::Login,
    route: Option<usize>,
    credentials: Credentials,
    provider: &mut P,
) -> Outcome<P::Session, P::Reply> {
    let config = &relay.config;
    let route = route.filter(|&i| !P::endpoints(&config.upstreams[i]).is_empty());
    let Some(index) = route else {
        return Outcome::NoRoute;
    };
    let upstream = &config.upstreams[index];
    let isolation = IsolationKey::for_session(config.egress.isolate, login);
    let target = relay.target(index, P::endpoints(upstream), &isolation);
    let (mut session, endpoint) = match provider.connect(&target).await {
        Ok(connected) => connected,
        Err(e) => return Outcome::Unreachable(Unreachable::from(&e)),
    };
    let credentials = credentials
        .for_endpoint(endpoint.bare_server_name(), endpoint.port)
        .presented_as(upstream.login);
    match provider.authenticate(&mut session, credentials).await {
        Ok(Verdict::Accepted(reply)) => Outcome::Accepted {
            session,
            reply,
            upstream: index,
        },
        Ok(Verdict::Refused { reply, temporary }) => {
            provider.close(session).await;
            Outcome::Refused { reply, temporary }
        }
        Ok(Verdict::Unsupported) => {
            provider.close(session).await;
            Outcome::Unsupported
        }
        Ok(Verdict::Lost) => {
            provider.close(session).await;
            Outcome::Lost
        }
        Ok(Verdict::Abandoned) => Outcome::Abandoned,
        // Broken or silent: nothing more is said to it.
        Err(_) => Outcome::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type O = Outcome<(), ()>;

    #[test]
    fn every_outcome_knows_its_counter_charge_delay_and_kind() {
        let cases: [(O, Option<Counter>, Charge, bool, bool); 14] = [
            (
                Outcome::Accepted {
                    session: (),
                    reply: (),
                    upstream: 0,
                },
                Some(Counter::Login),
                Charge::Nothing,
                false,
                false,
            ),
            (
                Outcome::Refused {
                    reply: (),
                    temporary: false,
                },
                Some(Counter::LoginRefusedByProvider),
                Charge::LoginAndNetwork,
                true,
                false,
            ),
            (
                Outcome::Refused {
                    reply: (),
                    temporary: true,
                },
                Some(Counter::LoginRefusedByProvider),
                Charge::Network,
                false,
                true,
            ),
            (
                Outcome::Locked,
                Some(Counter::LoginLocked),
                Charge::Nothing,
                true,
                true,
            ),
            (
                Outcome::NoRoute,
                Some(Counter::LoginNoRoute),
                Charge::Network,
                true,
                false,
            ),
            (
                Outcome::Unreachable(Unreachable::Tls),
                Some(Counter::ProviderTlsFailed),
                Charge::Nothing,
                false,
                true,
            ),
            (
                Outcome::Unreachable(Unreachable::TorNotReady),
                Some(Counter::TorNotReady),
                Charge::Nothing,
                false,
                true,
            ),
            (
                Outcome::Lost,
                Some(Counter::ProviderLost),
                Charge::Network,
                false,
                true,
            ),
            (Outcome::Unsupported, None, Charge::Nothing, false, false),
            (Outcome::Abandoned, None, Charge::Nothing, false, true),
            (Outcome::Evicted, None, Charge::Nothing, false, true),
            (Outcome::TooSlow, None, Charge::Nothing, false, true),
            (Outcome::Denied, None, Charge::LoginAndNetwork, true, false),
            // At once: holding it would only spend a descriptor.
            (
                Outcome::ProviderBudget,
                Some(Counter::LoginLocked),
                Charge::Nothing,
                false,
                true,
            ),
        ];
        for (i, (outcome, counter, charge, delayed, temporary)) in cases.into_iter().enumerate() {
            assert_eq!(outcome.counter(), counter, "case {i}");
            assert_eq!(outcome.charge(), charge, "case {i}");
            assert_eq!(outcome.delayed(), delayed, "case {i}");
            assert_eq!(outcome.is_temporary(), temporary, "case {i}");
        }
    }
}
