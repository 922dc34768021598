//! `p11ca-piv-emulator --port PORT --state DIR [--serial N]`: an emulated YubiKey 5 PIV card
//! (firmware 5.2.7) for the YubiKey tests. It connects to vsmartcard's vpcd reader driver
//! (loaded by a pcscd that softhsm/piv-token.sh starts) and answers the APDUs that ykcs11,
//! libykpiv, yubico-piv-tool and OpenSC send, so those real programs run against it unchanged.
//! Test infrastructure only (`--features piv-emulator`); never shipped.
//!
//! Keys exist only in this process and in `DIR/card.json` (so stopping the emulator is
//! "unplugging" the card and starting it again on the same DIR is "plugging it back").
//! `P11CA_PIV_TRACE=1` writes each command and answer to stderr (PIN data masked).
//!
//! vpcd's protocol (vsmartcard `vpcd.c`): every message is a 2-byte big-endian length and
//! that many bytes. One byte from vpcd is a control: 00 power off, 01 on, 02 reset (no
//! answer), 04 "send your ATR". Anything longer is a command APDU, answered by one message.

#[path = "piv/attest.rs"]
mod attest;
#[path = "piv/card.rs"]
mod card;
#[path = "piv/keys.rs"]
mod keys;
#[path = "piv/state.rs"]
mod state;
#[path = "piv/tlv.rs"]
mod tlv;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use card::Card;

struct Args {
    port: u16,
    state: PathBuf,
    serial: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut port = None;
    let mut state = None;
    let mut serial = 12_345_678;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--port" => port = Some(value()?.parse().map_err(|e| format!("--port: {e}"))?),
            "--state" => state = Some(PathBuf::from(value()?)),
            "--serial" => serial = value()?.parse().map_err(|e| format!("--serial: {e}"))?,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Args {
        port: port.ok_or("--port is required")?,
        state: state.ok_or("--state is required")?,
        serial,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("p11ca-piv-emulator: {e}");
            eprintln!("usage: p11ca-piv-emulator --port PORT --state DIR [--serial N]");
            std::process::exit(2);
        }
    };
    let mut card = match Card::open(state::Store::new(&args.state), args.serial) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("p11ca-piv-emulator: cannot open the card state: {e}");
            std::process::exit(1);
        }
    };
    let trace = std::env::var_os("P11CA_PIV_TRACE").is_some_and(|v| v == "1");
    // Stay inserted while vpcd is there; when it goes away for good (pcscd stopped), end.
    loop {
        let Some(stream) = connect(args.port, Duration::from_secs(10)) else {
            eprintln!("p11ca-piv-emulator: no vpcd on 127.0.0.1:{}", args.port);
            std::process::exit(1);
        };
        if let Err(e) = serve(stream, &mut card, trace) {
            eprintln!("p11ca-piv-emulator: vpcd connection ended: {e}");
        }
        card.reset();
    }
}

/// Connect to vpcd, retrying until `patience` runs out (vpcd listens once pcscd loads it).
fn connect(port: u16, patience: Duration) -> Option<TcpStream> {
    let start = Instant::now();
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            return Some(s);
        }
        if start.elapsed() > patience {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(mut s: TcpStream, card: &mut Card, trace: bool) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    // vpcd asks for the ATR at every presence poll (~0.4 s). Silence means it never took this
    // connection: after a card removal vpcd 0.8 can keep waiting on the old, dead one while a
    // new connect sits in its listen backlog (seen: every second re-plug hung). Reconnecting
    // lets vpcd drop the dead socket and take a fresh one.
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    loop {
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut msg)?;
        // vpcd 0.8 sends length and payload in two writes; without an immediate ACK each
        // APDU waits ~40 ms for delayed ACK (it is not sticky, so after every read).
        quickack(&s);
        let reply = match msg.as_slice() {
            [0x00] | [0x01] | [0x02] => {
                card.reset();
                continue;
            }
            [0x04] => card::ATR.to_vec(),
            [_] => continue,
            apdu => {
                let r = card.transmit(apdu);
                if trace {
                    eprintln!("> {}\n< {}", shown(apdu), hex(&r));
                }
                r
            }
        };
        let mut frame = (reply.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&reply);
        s.write_all(&frame)?;
    }
}

fn quickack(s: &TcpStream) {
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_tcp_quickack(true);
}

fn hex(b: &[u8]) -> String {
    base16ct::upper::encode_string(b)
}

/// The command as traced: PIN-carrying commands (VERIFY, CHANGE REFERENCE, RESET RETRY) and
/// the management-key setter without their data.
fn shown(apdu: &[u8]) -> String {
    match apdu.get(1) {
        Some(0x20 | 0x24 | 0x2c | 0xff) if apdu.len() > 5 => {
            format!("{} <secret>", hex(&apdu[..5]))
        }
        _ => hex(apdu),
    }
}
