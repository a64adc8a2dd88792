import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { FIXTURE_URL, vectorsDocument } from './dynamicsVectors';

// The same file is the Python port's test input (services/common/tests/test_dynamics.py).
const PATH = fileURLToPath(FIXTURE_URL);

describe('shared dynamics vectors', () => {
  it('the game gives exactly the fixture\'s states, bit for bit', () => {
    const fresh = JSON.stringify(vectorsDocument(), null, 0) + '\n';
    if (process.env.UPDATE_FIXTURES === '1') writeFileSync(PATH, fresh);
    const stored = readFileSync(PATH, 'utf8');
    // Whole-document equality: every event, sampled state and digest (which covers every tick).
    expect(JSON.parse(stored)).toEqual(JSON.parse(fresh));
    expect(stored).toBe(fresh);
  });
});
