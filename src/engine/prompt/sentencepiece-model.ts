// A SentencePiece model file (spiece.model, a serialized sentencepiece.ModelProto) read with a small protobuf
// wire-format reader: the pieces (string, score, type), the trainer spec's model type and special ids, and the
// normalizer spec's name and whitespace flags. Everything else is skipped by wire type. Field numbers from
// sentencepiece_model.proto: ModelProto { pieces = 1; trainer_spec = 2; normalizer_spec = 3 }, SentencePiece
// { piece = 1; score = 2; type = 3 }, TrainerSpec { model_type = 3; unk_id = 40; bos_id = 41; eos_id = 42;
// pad_id = 43 }, NormalizerSpec { name = 1; add_dummy_prefix = 3; remove_extra_whitespaces = 4 }.
import { readFileSync, statSync } from 'node:fs';
import { ModelFileError } from '../api.ts';

/** SentencePiece.Type: NORMAL is the default when the field is absent. */
export const PieceType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;
/** TrainerSpec.ModelType: UNIGRAM is the default when the field is absent. */
export const SpModelType = { UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4 } as const;

export interface SentencePieceModel {
  pieces: { piece: string; score: number; type: number }[];
  modelType: number;
  unkId: number;
  bosId: number;
  eosId: number;
  /** -1: none. */
  padId: number;
  normalizerName: string;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
}

/** T5's spiece.model is under 1 MiB and 32k pieces; these bounds leave room for any real tokenizer. */
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const MAX_PIECES = 2_000_000;

class WireFormatError extends Error {}

/** Protobuf wire format over one message's bytes: (field, wire type) tags, varints, fixed32/64, length-delimited. */
class ProtoReader {
  private at = 0;
  constructor(private readonly bytes: Uint8Array) {}

  done(): boolean {
    return this.at >= this.bytes.length;
  }

  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.bytes.length) throw new WireFormatError('truncated varint');
      const byte = this.bytes[this.at++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
    throw new WireFormatError('varint longer than 10 bytes');
  }

  /** An int32 field: negative values are sent as 10-byte two's complement varints; the low 32 bits are the value. */
  int32(): number {
    let low = 0;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.bytes.length) throw new WireFormatError('truncated varint');
      const byte = this.bytes[this.at++]!;
      if (i < 5) low |= (byte & 0x7f) << (7 * i);
      if (byte < 0x80) return low | 0;
    }
    throw new WireFormatError('varint longer than 10 bytes');
  }

  tag(): { field: number; wire: number } {
    const t = this.varint();
    return { field: Math.floor(t / 8), wire: t % 8 };
  }

  take(n: number): Uint8Array {
    if (n < 0 || this.at + n > this.bytes.length) throw new WireFormatError('field runs past the end of its message');
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  lengthDelimited(): Uint8Array {
    return this.take(this.varint());
  }

  float32(): number {
    const b = this.take(4);
    return new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.take(8);
    else if (wire === 2) this.lengthDelimited();
    else if (wire === 5) this.take(4);
    else throw new WireFormatError(`unsupported wire type ${wire}`);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function readPiece(bytes: Uint8Array): { piece: string; score: number; type: number } {
  const r = new ProtoReader(bytes);
  const out = { piece: '', score: 0, type: PieceType.NORMAL as number };
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === 2) out.piece = utf8.decode(r.lengthDelimited());
    else if (field === 2 && wire === 5) out.score = r.float32();
    else if (field === 3 && wire === 0) out.type = r.varint();
    else r.skip(wire);
  }
  return out;
}

/** Parses the bytes of a ModelProto (throws on malformed wire data; readSentencePieceModel names the file). */
export function parseSentencePieceModel(bytes: Uint8Array): SentencePieceModel {
  const model: SentencePieceModel = {
    pieces: [],
    modelType: SpModelType.UNIGRAM,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    normalizerName: '',
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
  };
  const r = new ProtoReader(bytes);
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === 2) {
      if (model.pieces.length >= MAX_PIECES) throw new WireFormatError(`more than ${MAX_PIECES} pieces`);
      model.pieces.push(readPiece(r.lengthDelimited()));
    } else if (field === 2 && wire === 2) {
      const t = new ProtoReader(r.lengthDelimited());
      while (!t.done()) {
        const f = t.tag();
        if (f.wire !== 0) t.skip(f.wire);
        else if (f.field === 3) model.modelType = t.varint();
        else if (f.field === 40) model.unkId = t.int32();
        else if (f.field === 41) model.bosId = t.int32();
        else if (f.field === 42) model.eosId = t.int32();
        else if (f.field === 43) model.padId = t.int32();
        else t.varint();
      }
    } else if (field === 3 && wire === 2) {
      const n = new ProtoReader(r.lengthDelimited());
      while (!n.done()) {
        const f = n.tag();
        if (f.field === 1 && f.wire === 2) model.normalizerName = utf8.decode(n.lengthDelimited());
        else if (f.field === 3 && f.wire === 0) model.addDummyPrefix = n.varint() !== 0;
        else if (f.field === 4 && f.wire === 0) model.removeExtraWhitespaces = n.varint() !== 0;
        else n.skip(f.wire);
      }
    } else r.skip(wire);
  }
  return model;
}

/** Reads and parses a spiece.model file; any malformation is a ModelFileError naming the file. */
export function readSentencePieceModel(file: string): SentencePieceModel {
  try {
    const size = statSync(file).size;
    if (size > MAX_FILE_BYTES) throw new WireFormatError(`is ${size} bytes, more than the ${MAX_FILE_BYTES} a SentencePiece model may have`);
    return parseSentencePieceModel(readFileSync(file));
  } catch (e) {
    if (e instanceof ModelFileError) throw e;
    throw new ModelFileError(file, `cannot read the SentencePiece model: ${(e as Error).message}`);
  }
}
