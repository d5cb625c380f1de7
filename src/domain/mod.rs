//! The business rules, free of I/O: identities, money, sale lifecycle, how a
//! batch of reservations is settled, and the domain errors every layer above
//! maps explicitly.

mod error;
mod identity;
mod money;
mod order;
mod quantity;
mod reservation;
mod sale;
mod settlement;

pub use error::DomainError;
pub use identity::{Email, Identity, LOCAL_ISSUER, Role};
pub use money::{Currency, Money};
pub use order::{HoldTerms, OrderStatus, PayableOrder, Payment, PaymentOutcome, decide_payment};
pub use quantity::Quantity;
pub use reservation::{PurchaseStatus, ReservationStatus};
pub use sale::{MAX_HOLD_SECONDS, OpeningRules, SaleAction, SaleState, SaleWindow, may_buy};
pub use settlement::{Candidate, Decision, FailureReason, PriorOutcome, SaleLedger, decide};
