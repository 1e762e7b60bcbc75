%%% @doc The records ExESDB v0.11 puts on the wire (Elixir structs as maps).
-module(testbed_rec).
-export([now_us/0, datetime/1, event_record/4, store_config/2, pad_version/1,
         snapshot_path/3, subscription_key/4]).

%% @doc Microseconds since the epoch.
now_us() -> erlang:system_time(microsecond).

%% @doc An Elixir %DateTime{} in UTC with microsecond precision.
datetime(Us) ->
    {{Y, Mo, D}, {H, Mi, S}} = calendar:system_time_to_universal_time(Us, microsecond),
    #{'__struct__' => 'Elixir.DateTime', calendar => 'Elixir.Calendar.ISO',
      year => Y, month => Mo, day => D, hour => H, minute => Mi, second => S,
      microsecond => {Us rem 1000000, 6}, time_zone => <<"Etc/UTC">>,
      zone_abbr => <<"UTC">>, utc_offset => 0, std_offset => 0}.

%% @doc The %ExESDB.Schema.EventRecord{} for a NewEvent appended as number N.
event_record(Stream, N, NewEvent, Us) when is_map(NewEvent) ->
    #{'__struct__' => 'Elixir.ExESDB.Schema.EventRecord',
      '__unknown_fields__' => [],
      event_stream_id => Stream,
      event_number => N,
      event_id => maps:get(event_id, NewEvent, nil),
      event_type => maps:get(event_type, NewEvent, nil),
      data_content_type => maps:get(data_content_type, NewEvent, 0),
      metadata_content_type => maps:get(metadata_content_type, NewEvent, 0),
      data => maps:get(data, NewEvent, nil),
      metadata => maps:get(metadata, NewEvent, nil),
      created => datetime(Us),
      created_epoch => Us}.

%% @doc One store's config as list_stores shows it.
store_config(Store, CreatedUs) ->
    #{store_id => Store, data_dir => unicode:characters_to_binary(testbed_app:env(data_dir)),
      timeout => 10000, priority => normal, status => active, version => 1,
      db_type => cluster, tags => [], store_description => <<"undefined!">>,
      pub_sub => nil, reader_idle_ms => nil, writer_idle_ms => nil,
      created_at => datetime(CreatedUs), auto_start => true, environment => nil}.

%% @doc Versions in Khepri snapshot paths: 10 digits, zero-padded.
pad_version(V) -> iolist_to_binary(io_lib:format("~10..0B", [V])).

snapshot_path(Src, Stream, V) -> [snapshots, Src, Stream, pad_version(V)].

%% @doc The Khepri path of a subscription: [subscriptions, <<"phash2">>].
subscription_key(Type, Selector, Name, _Store) ->
    [subscriptions, integer_to_binary(erlang:phash2({Type, Selector, Name}))].
