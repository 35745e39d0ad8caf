//! Panics inside a third-party parser turned into errors at our boundary.
//!
//! The tokenizers library `expect`s its way through some malformed `tokenizer.json` files (a
//! syntax error inside the decoder, a template naming a special token it does not define —
//! both found by fuzzing, issue 15). Its calls run inside [`catch`], so a researcher gets one
//! line naming the file instead of a crash; the panic's own message is not printed (a process
//! hook stays silent while a guarded call runs on that thread).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// Guarded calls in progress on this thread.
    static GUARDED: Cell<usize> = const { Cell::new(0) };
}

static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it becomes `Err(its message)`.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
    GUARDED.with(|g| g.set(g.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

#[cfg(test)]
mod tests {
    use super::catch;

    #[test]
    fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(catch(|| 7), Ok(7));
        let e = catch(|| -> u8 { panic!("no entry found for key") }).unwrap_err();
        assert_eq!(e, "no entry found for key");
        let e = catch(|| -> u8 { panic!("{} {}", "formatted", 1) }).unwrap_err();
        assert_eq!(e, "formatted 1");
    }
}
