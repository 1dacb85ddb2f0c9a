"""Plausible FCFS that never admits the request with the longest prompt (starvation)."""


class Scheduler:
    def __init__(self, config, block_manager):
        self.cfg, self.bm = config, block_manager
        self.waiting, self.running = [], []

    def add(self, seq):
        self.waiting.append(seq)

    def has_unfinished(self):
        return bool(self.waiting or self.running)

    def finish(self, seq):
        if seq in self.running:
            self.running.remove(seq)

    def schedule(self):
        batch, tokens = [], 0
        longest = max(self.waiting, key=lambda s: s.num_prompt_tokens, default=None)
        for seq in list(self.waiting):
            if seq is longest and len(self.waiting) + len(self.running) > 0:
                continue  # "later": it is never admitted
            n = seq.num_uncomputed_tokens - self.bm.num_cached_prefix_tokens(seq)
            if len(batch) + len(self.running) >= self.cfg.max_num_seqs or \
                    tokens + n > self.cfg.max_num_batched_tokens or not self.bm.can_allocate(seq, n):
                break
            self.bm.allocate(seq, n)
            seq.status = type(seq.status).RUNNING
            self.waiting.remove(seq)
            self.running.append(seq)
            batch.append((seq, n))
            tokens += n
        if batch:
            return batch
        for seq in list(self.running):
            if len(batch) >= self.cfg.max_num_seqs or not self.bm.can_allocate(seq, 1):
                break
            self.bm.allocate(seq, 1)
            batch.append((seq, 1))
        return batch
