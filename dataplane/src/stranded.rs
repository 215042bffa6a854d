//! An authenticated user whose Studio cannot be reached: the gateway
//! answers the connection protocol itself, just enough to tell them why in
//! one line on stderr with exit status 255 (as a session channel's command
//! would), instead of a bare disconnect or a hang.

use crate::error::ConnError;
use crate::ssh::io::Split;
use crate::ssh::msg::{self, open_failure};
use crate::ssh::transport::{Event, Leg};
use crate::ssh::wire::{Put, Reader};
use crate::upstream::UpstreamError;

/// Serves the user until they leave. `why` is the line they read; it is
/// also why the connection ended.
pub async fn run<S: Split>(user: &mut Leg<S>, why: UpstreamError) -> ConnError {
    let _ = serve(user, &why.to_string()).await;
    ConnError::Studio(why)
}

async fn serve<S: Split>(user: &mut Leg<S>, why: &str) -> Result<(), ConnError> {
    // Our channel number is the index; the value is the user's number.
    let mut channels: Vec<u32> = Vec::new();
    loop {
        user.tx.flush().await?;
        let p = user.rx.recv().await?;
        let mut r = Reader::new(&p);
        let m = r.u8("message")?;
        match m {
            m if msg::is_transport(m) => {
                if let Event::Disconnected { .. } = user.on_transport(&p)? {
                    return Ok(());
                }
            }
            msg::CHANNEL_OPEN => {
                let kind = r.string("channel type")?;
                let sender = r.u32("sender channel")?;
                if kind == b"session" && channels.len() < crate::config::DEFAULT_MAX_CHANNELS {
                    let mut c = Vec::with_capacity(17);
                    c.put_u8(msg::CHANNEL_OPEN_CONFIRMATION);
                    c.put_u32(sender);
                    c.put_u32(channels.len() as u32);
                    c.put_u32(0);
                    c.put_u32(32 * 1024);
                    channels.push(sender);
                    user.tx.relay(&c);
                } else {
                    let mut f = Vec::with_capacity(why.len() + 20);
                    f.put_u8(msg::CHANNEL_OPEN_FAILURE);
                    f.put_u32(sender);
                    f.put_u32(open_failure::CONNECT_FAILED);
                    f.put_str(why);
                    f.put_str("");
                    user.tx.relay(&f);
                }
            }
            msg::CHANNEL_REQUEST => {
                let ours = r.u32("recipient channel")?;
                let kind = r.string("request type")?;
                let want_reply = r.bool("want reply")?;
                let Some(&theirs) = channels.get(ours as usize) else {
                    continue;
                };
                if want_reply {
                    let mut s = Vec::with_capacity(5);
                    s.put_u8(msg::CHANNEL_SUCCESS);
                    s.put_u32(theirs);
                    user.tx.relay(&s);
                }
                if matches!(kind, b"shell" | b"exec" | b"subsystem") {
                    crate::relay::end_channel(&mut user.tx, theirs, &format!("{why}\r\n"));
                }
            }
            msg::GLOBAL_REQUEST => {
                r.string("request name")?;
                if r.bool("want reply")? {
                    user.tx.relay(&[msg::REQUEST_FAILURE]);
                }
            }
            // Closes, EOF, window adjusts, data: nothing to do.
            _ => {}
        }
    }
}
