//! The only `unsafe` of PAM re-authentication: hand-written bindings to libpam
//! (`pam_start`, `pam_authenticate`, `pam_acct_mgmt`, `pam_strerror`, `pam_end`), an owned
//! [`Handle`] that always ends with `pam_end`, and the conversation callback.
//!
//! Soundness rests on these facts, all local to this file:
//! - a [`Handle`] exists only after `pam_start` returned `PAM_SUCCESS` with a non-null
//!   handle, and its `Drop` is the one `pam_end`;
//! - the `appdata_ptr` PAM hands back to [`converse`] points to a [`Conversation`] that the
//!   handle borrows (lifetime `'a`), so it outlives every call PAM can make with it; the
//!   `pam_conv` struct itself lives in a `Box` owned by the handle, in case a libpam keeps
//!   the pointer instead of copying the struct (Linux-PAM copies it);
//! - [`converse`] never unwinds into C, checks `num_msg` against `PAM_MAX_NUM_MSG`, and
//!   gives PAM only `malloc`ed memory, which PAM frees.
//!
//! Linking: `#[link(name = "libpam.so.0", modifiers = "+verbatim")]` makes rustc pass
//! `-l:libpam.so.0` to the linker, which names the runtime library of Debian's `libpam0g`
//! (always installed) instead of the `libpam.so` development symlink that only
//! `libpam0g-dev` ships. No build script is needed.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::{self, NonNull};

use zeroize::Zeroize;

// Values from Linux-PAM's <security/_pam_types.h> (the ABI of libpam.so.0).
pub(super) const PAM_SUCCESS: c_int = 0;
pub(super) const PAM_BUF_ERR: c_int = 5;
pub(super) const PAM_PERM_DENIED: c_int = 6;
pub(super) const PAM_AUTH_ERR: c_int = 7;
pub(super) const PAM_USER_UNKNOWN: c_int = 10;
pub(super) const PAM_MAXTRIES: c_int = 11;
pub(super) const PAM_NEW_AUTHTOK_REQD: c_int = 12;
pub(super) const PAM_ACCT_EXPIRED: c_int = 13;
pub(super) const PAM_CONV_ERR: c_int = 19;
pub(super) const PAM_AUTHTOK_EXPIRED: c_int = 27;

/// The C name of a PAM return code (`PAM_AUTH_ERR`), for error messages and logs.
pub(super) fn code_name(code: c_int) -> &'static str {
    const NAMES: [&str; 32] = [
        "PAM_SUCCESS",
        "PAM_OPEN_ERR",
        "PAM_SYMBOL_ERR",
        "PAM_SERVICE_ERR",
        "PAM_SYSTEM_ERR",
        "PAM_BUF_ERR",
        "PAM_PERM_DENIED",
        "PAM_AUTH_ERR",
        "PAM_CRED_INSUFFICIENT",
        "PAM_AUTHINFO_UNAVAIL",
        "PAM_USER_UNKNOWN",
        "PAM_MAXTRIES",
        "PAM_NEW_AUTHTOK_REQD",
        "PAM_ACCT_EXPIRED",
        "PAM_SESSION_ERR",
        "PAM_CRED_UNAVAIL",
        "PAM_CRED_EXPIRED",
        "PAM_CRED_ERR",
        "PAM_NO_MODULE_DATA",
        "PAM_CONV_ERR",
        "PAM_AUTHTOK_ERR",
        "PAM_AUTHTOK_RECOVERY_ERR",
        "PAM_AUTHTOK_LOCK_BUSY",
        "PAM_AUTHTOK_DISABLE_AGING",
        "PAM_TRY_AGAIN",
        "PAM_IGNORE",
        "PAM_ABORT",
        "PAM_AUTHTOK_EXPIRED",
        "PAM_MODULE_UNKNOWN",
        "PAM_BAD_ITEM",
        "PAM_CONV_AGAIN",
        "PAM_INCOMPLETE",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("unknown PAM code")
}

/// `pam_authenticate`/`pam_acct_mgmt` flag: modules print nothing.
pub(super) const PAM_SILENT: c_int = 0x8000;
/// `pam_authenticate`/`pam_acct_mgmt` flag: an empty password never authenticates.
pub(super) const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;

const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
/// Most messages one conversation call may carry (`PAM_MAX_NUM_MSG`).
const PAM_MAX_NUM_MSG: usize = 32;

/// `pam_handle_t`: opaque.
#[repr(C)]
struct PamHandleT {
    _private: [u8; 0],
}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

// `+verbatim`: see the module doc (links libpam.so.0 without the -dev symlink).
#[link(name = "libpam.so.0", kind = "dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    fn pam_start(
        service_name: *const c_char,
        user: *const c_char,
        pam_conversation: *const PamConv,
        pamh: *mut *mut PamHandleT,
    ) -> c_int;
    fn pam_end(pamh: *mut PamHandleT, pam_status: c_int) -> c_int;
    fn pam_authenticate(pamh: *mut PamHandleT, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut PamHandleT, flags: c_int) -> c_int;
    fn pam_strerror(pamh: *mut PamHandleT, errnum: c_int) -> *const c_char;
}

/// What the conversation answers: the user name to a visible prompt, the password to a
/// hidden one. Borrowed by a [`Handle`] for its whole life.
pub(super) struct Conversation<'a> {
    user: &'a CStr,
    password: &'a [u8],
    /// The style of the first prompt we could not answer, for the error message.
    refused_style: Cell<Option<c_int>>,
}

impl<'a> Conversation<'a> {
    /// `password` is sent as is (the caller has checked it has no NUL).
    pub(super) fn new(user: &'a CStr, password: &'a [u8]) -> Conversation<'a> {
        Conversation {
            user,
            password,
            refused_style: Cell::new(None),
        }
    }

    /// The message style of a prompt the conversation refused (PAM then usually fails
    /// with `PAM_CONV_ERR`).
    pub(super) fn refused_style(&self) -> Option<c_int> {
        self.refused_style.get()
    }
}

/// A started PAM transaction; `pam_end` on drop.
pub(super) struct Handle<'a> {
    raw: NonNull<PamHandleT>,
    /// The last status a PAM call returned, passed to `pam_end` (modules clean up by it).
    last: c_int,
    /// Where `pam_start` was told the conversation lives; see the module doc.
    _conv: Box<PamConv>,
    _borrow: PhantomData<&'a Conversation<'a>>,
}

impl<'a> Handle<'a> {
    /// `pam_start(service, user, conv)`; the error is PAM's return code.
    pub(super) fn start(
        service: &CStr,
        user: &CStr,
        conversation: &'a Conversation<'a>,
    ) -> Result<Handle<'a>, c_int> {
        let conv = Box::new(PamConv {
            conv: Some(converse),
            appdata_ptr: ptr::from_ref(conversation).cast_mut().cast(),
        });
        let mut raw: *mut PamHandleT = ptr::null_mut();
        // SAFETY: service and user are NUL-terminated strings that outlive the call (PAM
        // copies them); `conv` points to a valid pam_conv whose callback has the C ABI and
        // signature PAM expects and whose appdata is `conversation`, borrowed for 'a by the
        // Handle built below; `raw` is a valid out-pointer.
        let code =
            unsafe { pam_start(service.as_ptr(), user.as_ptr(), &raw const *conv, &mut raw) };
        if code != PAM_SUCCESS {
            // Linux-PAM frees the handle itself (and sets it to NULL) when pam_start fails.
            return Err(code);
        }
        Ok(Handle {
            raw: NonNull::new(raw).ok_or(PAM_BUF_ERR)?,
            last: code,
            _conv: conv,
            _borrow: PhantomData,
        })
    }

    /// `pam_authenticate(flags)`: runs the `auth` stack (which asks the conversation).
    pub(super) fn authenticate(&mut self, flags: c_int) -> c_int {
        // SAFETY: raw is a live handle from a successful pam_start, not yet ended (only Drop
        // ends it); `&mut self` keeps it from being used by two calls at once.
        self.last = unsafe { pam_authenticate(self.raw.as_ptr(), flags) };
        self.last
    }

    /// `pam_acct_mgmt(flags)`: runs the `account` stack (expiry, locks, access rules).
    pub(super) fn acct_mgmt(&mut self, flags: c_int) -> c_int {
        // SAFETY: as in `authenticate`.
        self.last = unsafe { pam_acct_mgmt(self.raw.as_ptr(), flags) };
        self.last
    }

    /// `pam_strerror(code)`: PAM's own text for a return code.
    pub(super) fn strerror(&self, code: c_int) -> String {
        // SAFETY: raw is a live handle; pam_strerror only returns a pointer to a static (or
        // handle-owned) NUL-terminated string, or NULL, and changes nothing.
        let text = unsafe { pam_strerror(self.raw.as_ptr(), code) };
        if text.is_null() {
            return format!("PAM error {code}");
        }
        // SAFETY: non-null and NUL-terminated per pam_strerror's contract; we copy it out at
        // once, before any other PAM call could reuse the buffer.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Handle<'_> {
    fn drop(&mut self) {
        // SAFETY: raw came from a successful pam_start and is ended exactly once, here;
        // nothing uses it afterwards. pam_end also wipes the PAM_AUTHTOK item it stored.
        let code = unsafe { pam_end(self.raw.as_ptr(), self.last) };
        if code != PAM_SUCCESS {
            tracing::warn!(code, "pam_end failed");
        }
    }
}

/// What one message asks of us.
enum Answer {
    Nothing,
    User,
    Password,
}

/// The conversation callback PAM calls from inside `pam_authenticate`/`pam_acct_mgmt`.
///
/// Hidden prompt → the password; visible prompt → the user name; error/info text → no
/// answer; anything else (radio, binary prompts) → `PAM_CONV_ERR`. Never unwinds.
unsafe extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    // A panic must not cross into C: it becomes a conversation error.
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: PAM calls us with the contract of `struct pam_conv`: `msg` holds
        // `num_msg` message pointers and `appdata_ptr` is what we gave to pam_start;
        // converse_checked re-checks every count and pointer it can.
        unsafe { converse_checked(num_msg, msg, resp, appdata_ptr) }
    }))
    .unwrap_or(PAM_CONV_ERR)
}

/// [`converse`] without the panic guard.
///
/// # Safety
/// `msg` is NULL or points to `num_msg` readable `*const PamMessage` (Linux-PAM's layout:
/// an array of pointers), each NULL or pointing to a valid message; `resp` is NULL or
/// writable; `appdata_ptr` is NULL or the `Conversation` this file gave to `pam_start`.
unsafe fn converse_checked(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    let count = match usize::try_from(num_msg) {
        Ok(n) if (1..=PAM_MAX_NUM_MSG).contains(&n) => n,
        _ => return PAM_CONV_ERR,
    };
    if msg.is_null() || appdata_ptr.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: appdata_ptr is the `&'a Conversation` set in Handle::start, still borrowed
    // by the live Handle on whose call stack we are; we only take a shared reference.
    let conv: &Conversation<'_> = unsafe { &*appdata_ptr.cast_const().cast() };

    // SAFETY: msg is non-null and points to num_msg = count readable message pointers
    // (Linux-PAM's layout), which stay valid for this call; we only read them.
    let messages = unsafe { std::slice::from_raw_parts(msg.cast_const(), count) };
    let mut answers = [const { Answer::Nothing }; PAM_MAX_NUM_MSG];
    for (answer, &one) in answers.iter_mut().zip(messages) {
        if one.is_null() {
            return PAM_CONV_ERR;
        }
        // SAFETY: a non-null message pointer from PAM points to a valid pam_message for
        // the duration of this call; we only read its style.
        let style = unsafe { (*one).msg_style };
        *answer = match style {
            PAM_PROMPT_ECHO_OFF => Answer::Password,
            PAM_PROMPT_ECHO_ON => Answer::User,
            PAM_ERROR_MSG | PAM_TEXT_INFO => Answer::Nothing,
            other => {
                conv.refused_style.set(Some(other));
                return PAM_CONV_ERR;
            }
        };
    }
    let answers = answers.get(..count).unwrap_or_default();

    if resp.is_null() {
        // Some modules (pam_matrix `verbose`) pass no reply pointer with text-only
        // messages; a prompt without one cannot be answered.
        let prompts = answers.iter().any(|a| !matches!(a, Answer::Nothing));
        return if prompts { PAM_CONV_ERR } else { PAM_SUCCESS };
    }

    // PAM frees the array and every `resp` string with free(3), so both come from the C
    // allocator; calloc leaves unanswered entries NULL with resp_retcode 0.
    // SAFETY: calloc with a non-zero count and element size; NULL is handled below.
    let replies = unsafe { libc::calloc(count, size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    // SAFETY: calloc returned room for count entries, zero-filled, and all-zero is a valid
    // PamResponse (NULL, 0); nothing else refers to the array until we hand it over.
    let slots = unsafe { std::slice::from_raw_parts_mut(replies, count) };
    for (slot, answer) in slots.iter_mut().zip(answers) {
        let bytes = match answer {
            Answer::Nothing => continue,
            Answer::User => conv.user.to_bytes(),
            Answer::Password => conv.password,
        };
        match c_string_copy(bytes) {
            Some(copy) => slot.resp = copy.as_ptr(),
            None => {
                // SAFETY: replies holds count entries, each NULL or a copy made above, and
                // `slots` is not used again.
                unsafe { free_replies(replies, count) };
                return PAM_BUF_ERR;
            }
        }
    }
    // SAFETY: resp is non-null (checked) and writable per the conversation contract.
    unsafe { resp.write(replies) };
    PAM_SUCCESS
}

/// A `malloc`ed NUL-terminated copy of `bytes`, for PAM to own and free.
///
/// PAM frees it; whether it is wiped first is up to the module (Linux-PAM's own helpers
/// overwrite replies before freeing them). We cannot wipe it after handing it over.
fn c_string_copy(bytes: &[u8]) -> Option<NonNull<c_char>> {
    let len = bytes.len().checked_add(1)?;
    // SAFETY: malloc with a non-zero size; NULL is handled by NonNull::new.
    let buf = NonNull::new(unsafe { libc::malloc(len) }.cast::<u8>())?;
    // SAFETY: buf has len = bytes.len() + 1 writable bytes, a fresh allocation that cannot
    // overlap `bytes`.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buf.as_ptr(), bytes.len()) };
    // SAFETY: index bytes.len() < len, inside the allocation.
    unsafe { buf.as_ptr().wrapping_add(bytes.len()).write(0) };
    Some(buf.cast())
}

/// Wipes and frees a reply array that was not handed to PAM.
///
/// # Safety
/// `replies` is a `calloc`ed array of `count` entries, each `resp` NULL or from
/// [`c_string_copy`], and nothing else refers to any of it.
unsafe fn free_replies(replies: *mut PamResponse, count: usize) {
    // SAFETY: replies is a live calloc'ed array of count initialized entries, ours alone.
    let slots = unsafe { std::slice::from_raw_parts_mut(replies, count) };
    for slot in slots.iter_mut() {
        let text = std::mem::replace(&mut slot.resp, ptr::null_mut());
        if text.is_null() {
            continue;
        }
        // SAFETY: text is a NUL-terminated copy from c_string_copy that we still own.
        let len = unsafe { CStr::from_ptr(text) }.to_bytes().len();
        // SAFETY: the copy has len initialized bytes before its NUL, and no other reference.
        unsafe { std::slice::from_raw_parts_mut(text.cast::<u8>(), len) }.zeroize();
        // SAFETY: text came from malloc and is freed once, here.
        unsafe { libc::free(text.cast()) };
    }
    // SAFETY: the array came from calloc and is freed once, here (`slots` is dead).
    unsafe { libc::free(replies.cast()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(style: c_int) -> PamMessage {
        PamMessage {
            msg_style: style,
            msg: c"prompt".as_ptr(),
        }
    }

    /// Calls the callback as PAM would, returns (code, replies as owned strings).
    fn call(
        conv: &Conversation<'_>,
        styles: &[c_int],
        with_resp: bool,
    ) -> (c_int, Vec<Option<Vec<u8>>>) {
        let messages: Vec<PamMessage> = styles.iter().map(|&s| message(s)).collect();
        let mut pointers: Vec<*const PamMessage> = messages.iter().map(ptr::from_ref).collect();
        let mut replies: *mut PamResponse = ptr::null_mut();
        let resp = if with_resp {
            &raw mut replies
        } else {
            ptr::null_mut()
        };
        let num = c_int::try_from(styles.len()).unwrap();
        // SAFETY: test-only, the layout PAM uses: num message pointers, appdata a Conversation.
        let code = unsafe {
            converse(
                num,
                pointers.as_mut_ptr(),
                resp,
                ptr::from_ref(conv).cast_mut().cast(),
            )
        };
        let mut out = Vec::new();
        if !replies.is_null() {
            // SAFETY: test-only: the callback returned an array of styles.len() entries.
            let slots = unsafe { std::slice::from_raw_parts(replies, styles.len()) };
            for slot in slots {
                out.push((!slot.resp.is_null()).then(|| {
                    // SAFETY: test-only: a NUL-terminated copy from c_string_copy.
                    unsafe { CStr::from_ptr(slot.resp) }.to_bytes().to_vec()
                }));
            }
            // SAFETY: test-only: we own what the callback returned, as PAM would.
            unsafe { free_replies(replies, styles.len()) };
        }
        (code, out)
    }

    #[test]
    fn hidden_prompt_gets_password_visible_prompt_gets_user_text_gets_nothing() {
        let conv = Conversation::new(c"alice", b"hunter2");
        let (code, replies) = call(
            &conv,
            &[
                PAM_TEXT_INFO,
                PAM_PROMPT_ECHO_ON,
                PAM_PROMPT_ECHO_OFF,
                PAM_ERROR_MSG,
            ],
            true,
        );
        assert_eq!(code, PAM_SUCCESS);
        assert_eq!(
            replies,
            vec![
                None,
                Some(b"alice".to_vec()),
                Some(b"hunter2".to_vec()),
                None
            ]
        );
    }

    #[test]
    fn unknown_styles_and_bad_counts_are_conversation_errors() {
        let conv = Conversation::new(c"alice", b"pw");
        assert_eq!(call(&conv, &[PAM_PROMPT_ECHO_OFF, 7], true).0, PAM_CONV_ERR);
        assert_eq!(conv.refused_style(), Some(7));
        assert_eq!(call(&conv, &[], true).0, PAM_CONV_ERR);
        assert_eq!(
            call(&conv, &[PAM_TEXT_INFO; PAM_MAX_NUM_MSG + 1], true).0,
            PAM_CONV_ERR
        );
        assert_eq!(
            call(&conv, &[PAM_TEXT_INFO; PAM_MAX_NUM_MSG], true).0,
            PAM_SUCCESS
        );
        let mut none: *mut PamResponse = ptr::null_mut();
        // SAFETY: negative count and NULL msg must be refused before anything is read.
        let code = unsafe {
            converse(
                -1,
                ptr::null_mut(),
                &raw mut none,
                ptr::from_ref(&conv).cast_mut().cast(),
            )
        };
        assert_eq!(code, PAM_CONV_ERR);
        assert!(none.is_null());
    }

    #[test]
    fn without_a_reply_pointer_text_is_fine_and_prompts_fail() {
        let conv = Conversation::new(c"alice", b"pw");
        assert_eq!(call(&conv, &[PAM_TEXT_INFO], false).0, PAM_SUCCESS);
        assert_eq!(call(&conv, &[PAM_PROMPT_ECHO_OFF], false).0, PAM_CONV_ERR);
    }
}
