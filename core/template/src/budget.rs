//! The budget of one render: how many blocks it may enter, how deeply they may nest and how
//! long it may take. A template is data a workspace controls, and Handlebars has no such
//! limits: nested `{{#each}}` multiply (eight items, nine levels: 134 million bodies), and a
//! partial that includes itself recurses until the stack overflows, which aborts the process.
//!
//! Compiling wraps every block body, partial and inline partial in a hidden block helper
//! ([`STEP`], see `compile::wrap`), so every loop iteration and every partial entry passes
//! through [`enter`] and [`leave`]. The budget lives in a thread-local because a render runs
//! on one thread from start to end and Handlebars gives helpers no place for state of our own;
//! script helpers check the same deadline through their engine's progress callback.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderErrorReason, Renderable,
};

/// The hidden block helper compiling wraps around bodies. Its name starts with `_`, which no
/// script helper's name may, and the compile check refuses it in sources as an unknown helper.
pub(crate) const STEP: &str = "_plugdesk_step";

/// Which limit a render reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Steps,
    Depth,
    Time,
}

/// What one render may spend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) steps: u64,
    pub(crate) depth: usize,
    pub(crate) time: Duration,
}

struct State {
    budget: Budget,
    deadline: Instant,
    steps: u64,
    depth: usize,
    exceeded: Option<Exceeded>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Ends the render's budget when dropped, also when the render unwinds.
pub(crate) struct Guard {
    /// The budget of an outer render on this thread, put back at the end (renders do not nest
    /// today; this keeps them correct if one ever does).
    outer: Option<State>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let outer = self.outer.take();
        STATE.with(|s| *s.borrow_mut() = outer);
    }
}

/// Starts the budget of a render on this thread.
pub(crate) fn start(budget: Budget) -> Guard {
    let state = State { budget, deadline: Instant::now() + budget.time, steps: 0, depth: 0, exceeded: None };
    let outer = STATE.with(|s| s.borrow_mut().replace(state));
    Guard { outer }
}

/// The limit the current render reached, if it reached one.
pub(crate) fn exceeded() -> Option<Exceeded> {
    STATE.with(|s| s.borrow().as_ref().and_then(|s| s.exceeded))
}

/// Whether the current render is past its deadline; records it if so. Cheap enough for the
/// script engine to call every few thousand operations.
pub(crate) fn late() -> bool {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(state) = s.as_mut() else { return false };
        if Instant::now() > state.deadline {
            state.exceeded.get_or_insert(Exceeded::Time);
            true
        } else {
            false
        }
    })
}

/// Counts one step one level deeper; an error once a limit is reached. Without a started
/// budget (a registry used outside [`crate::TemplateSet`]'s render) nothing is counted.
fn enter() -> Result<(), Exceeded> {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(state) = s.as_mut() else { return Ok(()) };
        if let Some(e) = state.exceeded {
            return Err(e);
        }
        state.steps += 1;
        let reached = if state.steps > state.budget.steps {
            Some(Exceeded::Steps)
        } else if state.depth >= state.budget.depth {
            Some(Exceeded::Depth)
        } else if Instant::now() > state.deadline {
            Some(Exceeded::Time)
        } else {
            None
        };
        match reached {
            Some(e) => {
                state.exceeded = Some(e);
                Err(e)
            }
            None => {
                state.depth += 1;
                Ok(())
            }
        }
    })
}

fn leave() {
    STATE.with(|s| {
        if let Some(state) = s.borrow_mut().as_mut() {
            state.depth = state.depth.saturating_sub(1);
        }
    });
}

/// The helper behind [`STEP`]: counts the step, renders the body it wraps in the same context
/// (as `{{#if true}}` would), and leaves.
pub(crate) struct Step;

impl HelperDef for Step {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        if let Err(e) = enter() {
            // The message is replaced by the typed error `TemplateSet` makes from `exceeded`.
            return Err(RenderErrorReason::Other(format!("render budget exceeded: {e:?}")).into());
        }
        let result = match h.template() {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        };
        leave();
        result
    }
}
