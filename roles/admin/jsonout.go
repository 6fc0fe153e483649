package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// jsonOpts: field names as in the .proto (snake_case), and every field,
// zero or not, so that scripts see the same keys on every call.
var jsonOpts = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// marshalJSON is protojson with 64-bit integers as JSON numbers. protojson
// writes them as strings (JavaScript cannot hold them exactly), which makes
// counters awkward in jq and scripts; no counter here comes near 2^53.
// Field order is kept.
func marshalJSON(m proto.Message) ([]byte, error) {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out bytes.Buffer
	t, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("admin: json: %w", err)
	}
	if t != json.Delim('{') {
		return b, nil
	}
	if err := jsonObject(dec, &out, m.ProtoReflect().Descriptor()); err != nil {
		return nil, fmt.Errorf("admin: json: %w", err)
	}
	return out.Bytes(), nil
}

// jsonObject copies the rest of an object whose '{' was read.
func jsonObject(dec *json.Decoder, out *bytes.Buffer, md protoreflect.MessageDescriptor) error {
	out.WriteByte('{')
	for i := 0; dec.More(); i++ {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		if i > 0 {
			out.WriteByte(',')
		}
		writeJSON(out, key)
		out.WriteByte(':')
		fd := md.Fields().ByName(protoreflect.Name(key))
		if fd == nil {
			fd = md.Fields().ByJSONName(key)
		}
		switch {
		case fd == nil || fd.IsMap():
			err = jsonRaw(dec, out)
		case fd.IsList():
			err = jsonList(dec, out, fd)
		default:
			err = jsonValue(dec, out, fd)
		}
		if err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return err
	}
	out.WriteByte('}')
	return nil
}

func jsonList(dec *json.Decoder, out *bytes.Buffer, fd protoreflect.FieldDescriptor) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t != json.Delim('[') {
		writeJSON(out, t)
		return nil
	}
	out.WriteByte('[')
	for i := 0; dec.More(); i++ {
		if i > 0 {
			out.WriteByte(',')
		}
		if err := jsonValue(dec, out, fd); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // ']'
		return err
	}
	out.WriteByte(']')
	return nil
}

// jsonValue copies one value of field fd (one element of a list).
func jsonValue(dec *json.Decoder, out *bytes.Buffer, fd protoreflect.FieldDescriptor) error {
	if md := fd.Message(); md != nil {
		if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
			return jsonRaw(dec, out) // timestamps and the like: as protojson wrote them
		}
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if t != json.Delim('{') {
			writeJSON(out, t)
			return nil
		}
		return jsonObject(dec, out, md)
	}
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if s, ok := t.(string); ok && is64(fd.Kind()) {
		if _, err := strconv.ParseInt(s, 10, 64); err == nil {
			out.WriteString(s)
			return nil
		}
		if _, err := strconv.ParseUint(s, 10, 64); err == nil {
			out.WriteString(s)
			return nil
		}
	}
	writeJSON(out, t)
	return nil
}

func is64(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return true
	}
	return false
}

func jsonRaw(dec *json.Decoder, out *bytes.Buffer) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	out.Write(raw)
	return nil
}

// writeJSON writes a token (string, json.Number, bool or nil) as JSON.
func writeJSON(out *bytes.Buffer, v any) {
	b, _ := json.Marshal(v) // cannot fail for decoder tokens
	out.Write(b)
}
