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

    /// The visible screen now.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    /// Waits (up to 20 s) until the screen shows `needle`; the screen.
    pub fn wait_for(&self, needle: &str) -> String {
        self.poll(needle, Duration::from_secs(20))
            .unwrap_or_else(|screen| panic!("screen never showed {needle:?}:\n{screen}"))
    }

    /// Types `keys` and Enter, again each time the screen has not shown
    /// `needle` a second later, until it shows (up to 20 s in all): for
    /// output that depends on something still travelling (a resize), so
    /// the test waits on the screen, not on a guessed delay. The screen.
    pub fn retype_until(&self, keys: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.type_line(keys);
            match self.poll(needle, Duration::from_secs(1)) {
                Ok(screen) => return screen,
                Err(screen) => assert!(
                    Instant::now() < deadline,
                    "screen never showed {needle:?} after {keys:?}:\n{screen}"
                ),
            }
        }
    }

    /// Polls the screen for `needle` for up to `wait`: the screen, or the
    /// last screen seen.
    fn poll(&self, needle: &str, wait: Duration) -> Result<String, String> {
        let deadline = Instant::now() + wait;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                return Err(screen);
            }
            std::thread::sleep(Duration::from_millis(50));
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
