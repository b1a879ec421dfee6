//! Deterministic mutations of valid inputs for the randomized tests beside each fuzz
//! entry point (`fuzz.rs`, `uwsgi/fuzz.rs`, `client_addr/fuzz.rs`, `proxy.rs`,
//! `body/tests.rs`): the same inputs every run, so a failure reproduces. Test-only, and
//! it imports nothing from the crate, so every module's tests may use it.

/// How to mutate: `count` inputs, the seeds in turn, each with 1 to `max_edits` edits
/// drawn from an xorshift generator started at `state`. An edit replaces, deletes or
/// inserts a byte of `alphabet` at a random place; with `bump`, it may also add one to
/// a byte (nearby lengths and sizes).
pub(crate) struct Mutations<'a> {
    pub alphabet: &'a [u8],
    pub count: usize,
    pub max_edits: u64,
    pub bump: bool,
    pub state: u64,
}

impl Mutations<'_> {
    /// Calls `each` with the input's number and its bytes.
    pub(crate) fn run<S: AsRef<[u8]>>(self, seeds: &[S], mut each: impl FnMut(usize, &[u8])) {
        let mut state = self.state;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = self.alphabet;
        let ops = if self.bump { 4 } else { 3 };
        for i in 0..self.count {
            let mut data = seeds[i % seeds.len()].as_ref().to_vec();
            for _ in 0..(next() % self.max_edits + 1) {
                let at = (next() as usize) % (data.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                // Without `bump` the draw is the one every caller made before this
                // helper existed, so their inputs did not change.
                match (next() % ops, self.bump) {
                    (0, _) if at < data.len() => data[at] = byte,
                    (1, true) if at < data.len() => data[at] = data[at].wrapping_add(1),
                    (1, false) | (2, true) if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.insert(at, byte),
                }
            }
            each(i, &data);
        }
    }
}
