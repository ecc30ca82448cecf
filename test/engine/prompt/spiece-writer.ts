// Writes a SentencePiece ModelProto (spiece.model) for the tests, with a protobuf encoder of its own (independent of
// the reader under test): the pieces with T5's types (<pad> and </s> control, <unk> unknown), a trainer spec with
// T5's ids (bos_id -1 as a 10-byte varint) and fields the reader must skip, and an nmt_nfkc normalizer spec.
import { writeFileSync } from 'node:fs';

function varint(value: number | bigint): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v ? byte | 0x80 : byte);
  } while (v);
  return out;
}
const tag = (field: number, wire: number) => varint(field * 8 + wire);
const bytesField = (field: number, bytes: Uint8Array | number[]) => [...tag(field, 2), ...varint(bytes.length), ...bytes];
const stringField = (field: number, s: string) => bytesField(field, new TextEncoder().encode(s));
const varintField = (field: number, v: number) => [...tag(field, 0), ...varint(v)];
function floatField(field: number, v: number): number[] {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, v, true);
  return [...tag(field, 5), ...b];
}

const TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3 };

/** spiece.model bytes for `vocab` (ids in order), T5's special ids: pad 0, eos 1, unk 2. */
export function spieceModelBytes(vocab: readonly [string, number][]): Uint8Array {
  const out: number[] = [];
  for (const [piece, score] of vocab) {
    const type = piece === '<unk>' ? TYPE.UNKNOWN : piece === '<pad>' || piece === '</s>' ? TYPE.CONTROL : TYPE.NORMAL;
    // T5's file leaves `type` out for normal pieces (the proto default).
    const fields = [...stringField(1, piece), ...floatField(2, score), ...(type === TYPE.NORMAL ? [] : varintField(3, type))];
    out.push(...bytesField(1, fields));
  }
  const trainer = [
    ...stringField(1, 'corpus.txt'),
    ...varintField(3, 1), // UNIGRAM
    ...varintField(4, vocab.length),
    ...floatField(10, 0.9995), // character_coverage
    ...varintField(40, 2),
    ...varintField(41, -1),
    ...varintField(42, 1),
    ...varintField(43, 0),
    ...stringField(45, '<unk>'),
  ];
  out.push(...bytesField(2, trainer));
  const normalizer = [...stringField(1, 'nmt_nfkc'), ...bytesField(2, [1, 2, 3, 4]), ...varintField(3, 1), ...varintField(4, 1), ...varintField(5, 1)];
  out.push(...bytesField(3, normalizer));
  // A field the reader does not know (ModelProto.self_test_data = 4): skipped.
  out.push(...bytesField(4, bytesField(1, [...stringField(1, 'a'), ...stringField(2, 'b')])));
  return Uint8Array.from(out);
}

export function writeSpieceModel(file: string, vocab: readonly [string, number][]): string {
  writeFileSync(file, spieceModelBytes(vocab));
  return file;
}
