//! Terminal modes from `pty-req`: the user's terminal settings (erase
//! character, interrupt key, echo, CR/LF mapping...) applied to the new pty,
//! as sshd does, so keys behave in the Studio as they do at home.
//!
//! Modes this platform lacks (VDSUSP, VSTATUS...) and the line speeds are
//! ignored; a control character of 255 disables it.

use std::os::fd::AsFd;

use nix::sys::termios::{
    self, ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg, SpecialCharacterIndices as Cc,
};
use russh::Pty;

/// Applies `modes` to the terminal behind `fd`.
pub fn apply(fd: impl AsFd, modes: &[(Pty, u32)]) -> nix::Result<()> {
    if modes.is_empty() {
        return Ok(());
    }
    let mut t = termios::tcgetattr(&fd)?;
    for &(mode, value) in modes {
        let on = value != 0;
        if let Some(cc) = control_char(mode) {
            t.control_chars[cc as usize] = if value == 255 { 0 } else { value as u8 };
        } else if let Some(flag) = input_flag(mode) {
            t.input_flags.set(flag, on);
        } else if let Some(flag) = local_flag(mode) {
            t.local_flags.set(flag, on);
        } else if let Some(flag) = output_flag(mode) {
            t.output_flags.set(flag, on);
        } else if let Some(flag) = control_flag(mode) {
            if matches!(mode, Pty::CS7 | Pty::CS8) && on {
                t.control_flags.remove(ControlFlags::CSIZE);
            }
            t.control_flags.set(flag, on);
        }
    }
    termios::tcsetattr(&fd, SetArg::TCSANOW, &t)
}

fn control_char(mode: Pty) -> Option<Cc> {
    Some(match mode {
        Pty::VINTR => Cc::VINTR,
        Pty::VQUIT => Cc::VQUIT,
        Pty::VERASE => Cc::VERASE,
        Pty::VKILL => Cc::VKILL,
        Pty::VEOF => Cc::VEOF,
        Pty::VEOL => Cc::VEOL,
        Pty::VEOL2 => Cc::VEOL2,
        Pty::VSTART => Cc::VSTART,
        Pty::VSTOP => Cc::VSTOP,
        Pty::VSUSP => Cc::VSUSP,
        Pty::VREPRINT => Cc::VREPRINT,
        Pty::VWERASE => Cc::VWERASE,
        Pty::VLNEXT => Cc::VLNEXT,
        Pty::VDISCARD => Cc::VDISCARD,
        _ => return None,
    })
}

fn input_flag(mode: Pty) -> Option<InputFlags> {
    Some(match mode {
        Pty::IGNPAR => InputFlags::IGNPAR,
        Pty::PARMRK => InputFlags::PARMRK,
        Pty::INPCK => InputFlags::INPCK,
        Pty::ISTRIP => InputFlags::ISTRIP,
        Pty::INLCR => InputFlags::INLCR,
        Pty::IGNCR => InputFlags::IGNCR,
        Pty::ICRNL => InputFlags::ICRNL,
        Pty::IUCLC => InputFlags::IUCLC,
        Pty::IXON => InputFlags::IXON,
        Pty::IXANY => InputFlags::IXANY,
        Pty::IXOFF => InputFlags::IXOFF,
        Pty::IMAXBEL => InputFlags::IMAXBEL,
        Pty::IUTF8 => InputFlags::IUTF8,
        _ => return None,
    })
}

fn local_flag(mode: Pty) -> Option<LocalFlags> {
    Some(match mode {
        Pty::ISIG => LocalFlags::ISIG,
        Pty::ICANON => LocalFlags::ICANON,
        Pty::XCASE => LocalFlags::XCASE,
        Pty::ECHO => LocalFlags::ECHO,
        Pty::ECHOE => LocalFlags::ECHOE,
        Pty::ECHOK => LocalFlags::ECHOK,
        Pty::ECHONL => LocalFlags::ECHONL,
        Pty::NOFLSH => LocalFlags::NOFLSH,
        Pty::TOSTOP => LocalFlags::TOSTOP,
        Pty::IEXTEN => LocalFlags::IEXTEN,
        Pty::ECHOCTL => LocalFlags::ECHOCTL,
        Pty::ECHOKE => LocalFlags::ECHOKE,
        Pty::PENDIN => LocalFlags::PENDIN,
        _ => return None,
    })
}

fn output_flag(mode: Pty) -> Option<OutputFlags> {
    Some(match mode {
        Pty::OPOST => OutputFlags::OPOST,
        Pty::OLCUC => OutputFlags::OLCUC,
        Pty::ONLCR => OutputFlags::ONLCR,
        Pty::OCRNL => OutputFlags::OCRNL,
        Pty::ONOCR => OutputFlags::ONOCR,
        Pty::ONLRET => OutputFlags::ONLRET,
        _ => return None,
    })
}

fn control_flag(mode: Pty) -> Option<ControlFlags> {
    Some(match mode {
        Pty::CS7 => ControlFlags::CS7,
        Pty::CS8 => ControlFlags::CS8,
        Pty::PARENB => ControlFlags::PARENB,
        Pty::PARODD => ControlFlags::PARODD,
        _ => return None,
    })
}
