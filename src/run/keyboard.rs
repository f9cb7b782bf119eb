//! On a terminal, `tickstream run` reads Ctrl-C (and `q`) as keys instead of receiving SIGINT.
//!
//! Why: under `make run`, a Ctrl-C signal also reaches `make`, which then dies of it and
//! reports failure even though tickstream stopped cleanly. With the terminal's signal keys
//! turned off for the duration, only tickstream sees the key; it stops, and `make` exits 0.
//! The terminal settings are restored when the guard drops (also on panic). SIGTERM and a
//! SIGINT sent by `kill` still work as before.

use std::io::Read;

use tickstream_streams::Shutdown;
use tracing::info;

/// Ctrl-C as a byte, once the terminal no longer turns it into a signal.
const CTRL_C: u8 = 0x03;

/// The terminal's settings before we changed them; restored on drop.
pub struct KeyboardGuard {
    original: libc::termios,
}

impl KeyboardGuard {
    /// Turns off signal keys, line buffering and echo on stdin, if stdin is a terminal.
    pub fn capture() -> Option<Self> {
        // SAFETY: tcgetattr only writes the struct it is given; an all-zero termios is a
        // valid value to overwrite.
        let mut original: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut original) } != 0 {
            return None; // not a terminal
        }
        let mut keys = original;
        keys.c_lflag &= !(libc::ISIG | libc::ICANON | libc::ECHO);
        keys.c_cc[libc::VMIN] = 1;
        keys.c_cc[libc::VTIME] = 0;
        // SAFETY: a termios read from this terminal with flags cleared.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &keys) } != 0 {
            return None;
        }
        Some(Self { original })
    }

    /// Reads keys on a thread of its own and requests `shutdown` on Ctrl-C or `q`. The thread
    /// blocks on stdin for the life of the process.
    pub fn watch(&self, shutdown: Shutdown) {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut key = [0u8; 1];
            while let Ok(1) = stdin.read(&mut key) {
                if key[0] == CTRL_C || key[0] == b'q' {
                    info!(
                        key = if key[0] == b'q' { "q" } else { "Ctrl-C" },
                        "stopping"
                    );
                    shutdown.request();
                    return;
                }
            }
        });
    }
}

impl Drop for KeyboardGuard {
    fn drop(&mut self) {
        // SAFETY: the settings this terminal had before `capture`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.original) };
    }
}
