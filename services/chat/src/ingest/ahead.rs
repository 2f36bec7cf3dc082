//! Storing a round while social decides who may post in it. Nearly every poster of a round is
//! allowed, so a round of private conversations is written while its authorization call is in
//! flight, and its transaction commits only once social has allowed every poster: the round
//! waits for the longer of the two, not for one and then the other. Nothing is visible, pushed
//! or acknowledged before that commit, and social is still asked after the round's messages
//! were accepted, so a block or unfriend bites exactly as before.
//!
//! When social refuses anyone, or does not answer in time, the transaction is rolled back
//! (nothing stored, charged or recorded) and the round is taken the plain way: the verdicts
//! social gave applied (it is not asked twice), the rest stored. For a second after, rounds
//! ask first, so a sender writing to people who blocked them costs about one wasted
//! transaction a second per chain of rounds, not one every round. A group's round is never
//! stored ahead: its roster decides whose inbox rows the transaction writes.

use std::collections::HashMap;
use std::time::Duration;

use mesh_contracts::chat::ConversationId;
use mesh_observability::metrics::CHAT_STORE_RETAKES;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::batch::{Batch, Poster};
use crate::lately::Lately;
use crate::state::State;
use crate::store::messages::{self, Confirm, Outcome};
use crate::store::partitions::{Advance, AllFenced};

/// How long a written transaction waits for social's answer: far above its usual millisecond
/// or two, far below Postgres's bound on a transaction left idle. Past it the round is given
/// up and taken the plain way, which waits for social as long as it takes.
const ANSWER_WAIT: Duration = Duration::from_millis(500);

/// Whether a round of this process was given up within the last second: rounds then ask
/// social first.
static GIVEN_UP: Lately = Lately::new(Duration::from_secs(1));

/// Why a round stored ahead did not commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// Social refused a poster.
    Refused,
    /// Social did not answer (in time, or at all).
    Unanswered,
}

impl Withheld {
    fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Unanswered => "unanswered",
        }
    }
}

/// What storing a round ahead came to.
pub enum Ahead {
    /// Social allowed every poster and the round was stored (or, fenced out, nothing was):
    /// one outcome per message stored, in order, and the messages' positions in the batch.
    Stored(AllFenced<Vec<Outcome>>, Vec<usize>),
    /// Nothing was stored; `asked` when social's verdicts were applied to the batch (the round
    /// needs no authorization any more).
    NotStored { asked: bool },
}

/// Whether a batch whose posters are `posters` may be stored ahead of its authorization: it
/// has messages to store, all in private conversations, and no round was given up lately.
pub fn worth_trying(posters: &[Poster]) -> bool {
    !posters.is_empty()
        && posters
            .iter()
            .all(|(conversation, _)| matches!(conversation, ConversationId::Private(..)))
        && !GIVEN_UP.holds()
}

/// Stores `batch`'s messages while social is asked whether its `posters` may post,
/// committing only if social allowed every one; applies social's verdicts to `batch`
/// whenever it answered.
pub async fn store(
    state: &State,
    advances: &[Advance],
    batch: &mut Batch,
    posters: Vec<Poster>,
) -> Ahead {
    let (new, positions) = batch.to_store();
    let (tell, told) = oneshot::channel();
    let mut confirm = SocialAllows::waiting_for(told);
    let ask = async {
        let now = OffsetDateTime::now_utc();
        let decided = state
            .membership()
            .authorize_batch(posters, state.config().open_private, now)
            .await;
        let verdict = match &decided {
            Ok(decided) if decided.verdicts.values().all(Result::is_ok) => Ok(()),
            Ok(_) => Err(Withheld::Refused),
            Err(_) => Err(Withheld::Unanswered),
        };
        let _ = tell.send(verdict);
        decided
    };
    let no_rosters = HashMap::new();
    let write = messages::store_batch_if(state.pool(), advances, &new, &no_rosters, &mut confirm);
    let (decided, written) = tokio::join!(ask, write);
    let asked = match decided {
        Ok(decided) => {
            batch.apply(&decided.verdicts);
            true
        }
        Err(_) => false,
    };
    match written {
        Ok(Ok(stored)) => Ahead::Stored(stored, positions),
        Ok(Err(withheld)) => {
            give_up(withheld);
            Ahead::NotStored { asked }
        }
        // The plain way meets the failure again, and retries it or narrows it down.
        Err(err) => {
            tracing::debug!(error = %err, "a round stored ahead failed; taken the plain way");
            Ahead::NotStored { asked }
        }
    }
}

/// Social's answer, as the storing transaction waits for it.
struct SocialAllows {
    told: Option<oneshot::Receiver<Result<(), Withheld>>>,
    known: Option<Result<(), Withheld>>,
}

impl SocialAllows {
    fn waiting_for(told: oneshot::Receiver<Result<(), Withheld>>) -> Self {
        Self {
            told: Some(told),
            known: None,
        }
    }
}

impl Confirm for SocialAllows {
    type Withheld = Withheld;

    async fn confirm(&mut self) -> Result<(), Withheld> {
        if let Some(known) = self.known {
            return known;
        }
        let answer = match self.told.take() {
            Some(told) => match tokio::time::timeout(ANSWER_WAIT, told).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) | Err(_) => Err(Withheld::Unanswered),
            },
            None => Err(Withheld::Unanswered),
        };
        self.known = Some(answer);
        answer
    }
}

/// Counts a round given up (it is stored again the plain way) and makes rounds ask first for
/// a while.
fn give_up(why: Withheld) {
    CHAT_STORE_RETAKES.with_label_values(&[why.label()]).inc();
    GIVEN_UP.note();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_once_known_is_kept() {
        let (tell, told) = oneshot::channel();
        let mut confirm = SocialAllows::waiting_for(told);
        tell.send(Err(Withheld::Refused)).unwrap();
        assert_eq!(confirm.confirm().await, Err(Withheld::Refused));
        assert_eq!(
            confirm.confirm().await,
            Err(Withheld::Refused),
            "a round stored again is refused again, without a new answer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_in_time_withholds_the_commit() {
        let (_tell, told) = oneshot::channel();
        let mut confirm = SocialAllows::waiting_for(told);
        assert_eq!(confirm.confirm().await, Err(Withheld::Unanswered));
    }

    #[tokio::test]
    async fn an_allowed_round_commits() {
        let (tell, told) = oneshot::channel();
        let mut confirm = SocialAllows::waiting_for(told);
        tell.send(Ok(())).unwrap();
        assert_eq!(confirm.confirm().await, Ok(()));
    }
}
