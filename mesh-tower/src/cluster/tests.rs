//! A cluster's breaker slots and retry budget.

use std::sync::Arc;

use super::*;

#[test]
fn slots_admit_up_to_their_limit_and_free_on_drop() {
    let state = Arc::new(ClusterState::default());
    let a = state.try_admit_pending(2).expect("first");
    let _b = state.try_admit_pending(2).expect("second");
    assert!(
        state.try_admit_pending(2).is_none(),
        "over max_pending_requests"
    );
    assert_eq!(state.overflows.load(Ordering::Relaxed), 1);
    drop(a);
    assert!(
        state.try_admit_pending(2).is_some(),
        "a dropped slot is free again"
    );
    // Kinds are counted apart.
    assert!(state.try_admit_request(1).is_some());
}

#[test]
fn retries_are_admitted_by_the_budget_when_there_is_one() {
    let state = Arc::new(ClusterState::default());
    let breakers = CircuitBreakers {
        max_retries: 1,
        ..CircuitBreakers::default()
    };
    let first = state.try_admit_retry(&breakers).expect("one retry");
    assert!(state.try_admit_retry(&breakers).is_none(), "max_retries 1");
    drop(first);
    let budgeted = CircuitBreakers {
        retry_budget: Some(mesh_core::RetryBudget::default()),
        ..breakers
    };
    let held: Vec<_> = (0..3)
        .map_while(|_| state.try_admit_retry(&budgeted))
        .collect();
    assert_eq!(
        held.len(),
        3,
        "the budget's floor of 3 replaces max_retries"
    );
}
