//! A real terminal for pty tests: a private tmux server (its own `-L`
//! socket) running one command in a window of a given size, whose screen
//! can be awaited. The server is killed on drop.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::Ssh;

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (a shell line) in a detached `cols`x`rows` window.
    pub fn start(name: &str, cols: u16, rows: u16, command: &str) -> Self {
        let tmux = Self {
            socket: format!("{name}-{}", std::process::id()),
        };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        tmux.run(&["new-session", "-d", "-x", &cols, "-y", &rows, command]);
        tmux
    }

    /// Runs one tmux command against this server; its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` and presses Enter.
    pub fn type_line(&self, keys: &str) {
        self.run(&["send-keys", keys, "Enter"]);
    }

    /// Waits (up to 20 s) until the screen shows `needle`; the screen.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.run(&["capture-pane", "-p"]);
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {needle:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

impl Ssh {
    /// The shell line of an interactive `ssh -tt` session to this
    /// destination, for a terminal to run.
    pub fn tty_line(&self) -> String {
        let opts: Vec<String> = self.options().iter().map(|o| format!("'{o}'")).collect();
        format!(
            "ssh {} -tt -p {} {}",
            opts.join(" "),
            self.port,
            self.destination()
        )
    }
}
