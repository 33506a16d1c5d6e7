import { describe, it, expect } from 'vitest';
import { canonicalize } from '../../src/core/canonical-json.ts';

describe('canonical JSON (RFC 8785)', () => {
  it('the RFC 8785 §3.2.2 example', () => {
    const input = JSON.parse(
      '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}',
    );
    expect(canonicalize(input)).toBe(
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
  });

  it('sorts keys by UTF-16 code units (RFC 8785 §3.2.3)', () => {
    const input = {
      '\u20ac': 'Euro Sign',
      '\r': 'Carriage Return',
      '\ufb33': 'Hebrew Letter Dalet With Dagesh',
      '1': 'One',
      '\ud83d\ude00': 'Emoji: Grinning Face',
      '\u0080': 'Control',
      '\u00f6': 'Latin Small Letter O With Diaeresis',
    };
    const out = canonicalize(input);
    // (read the order from the text: a parsed object would list "1" first, as JS orders integer keys)
    const order = [...out.matchAll(/"((?:[^"\\]|\\.)*)":/g)].map((m) => JSON.parse(`"${m[1]}"`));
    expect(order).toEqual(['\r', '1', '\u0080', '\u00f6', '\u20ac', '\ud83d\ude00', '\ufb33']);
    // The emoji (surrogates D83D DE00) sorts before U+FB33, though its code point is larger.
    expect(out.startsWith('{"\\r":"Carriage Return","1":"One","\u0080":"Control"')).toBe(true);
  });

  it('numbers as ECMAScript writes them (RFC 8785 appendix B)', () => {
    const cases: [number, string][] = [
      [0, '0'],
      [-0, '0'],
      [1, '1'],
      [-1.5, '-1.5'],
      [1e21, '1e+21'],
      [1e20, '100000000000000000000'],
      [1e-7, '1e-7'],
      [0.000001, '0.000001'],
      [5e-324, '5e-324'],
      [1.7976931348623157e308, '1.7976931348623157e+308'],
      [9007199254740992, '9007199254740992'],
      [295147905179352830000, '295147905179352830000'],
      [0.1 + 0.2, '0.30000000000000004'],
    ];
    for (const [n, s] of cases) expect(canonicalize(n), String(n)).toBe(s);
    expect(() => canonicalize(NaN)).toThrow();
    expect(() => canonicalize({ a: Infinity })).toThrow();
  });

  it('escapes only what JSON must, in lowercase hex', () => {
    expect(canonicalize('\u0000\u001f\u007f\b\t\n\f\r"\\/')).toBe('"\\u0000\\u001f\u007f\\b\\t\\n\\f\\r\\"\\\\/"');
    expect(canonicalize('é 世界 🙂')).toBe('"é 世界 🙂"');
  });

  it('nested objects, arrays and undefined members', () => {
    expect(canonicalize({ b: [3, { z: 1, a: 2 }], a: { d: null, c: true }, u: undefined })).toBe('{"a":{"c":true,"d":null},"b":[3,{"a":2,"z":1}]}');
  });
});
