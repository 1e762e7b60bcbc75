%%% @doc One store on one node: the node's replica, the store's leader election, and the
%%% replicated log under the data directory.
%%%
%%% Consistency model (stands in for Khepri on Ra; docs/testbed.md has the long form):
%%% - Every node runs a store server per store. One of them is the leader: it holds the
%%%   global name {testbed_leader, Store} and a term {N, Node}, higher than every term it
%%%   could see when it took over. The log is one sequence of indexed entries; every entry
%%%   carries the term of the leader that wrote it, and each node's log is a copy of a
%%%   prefix of its leader's (same index and term means same entry, as in Raft).
%%% - Every write is serialised by the leader, which checks expected versions against its
%%%   own state. Writes that arrive while a batch is being replicated wait and go out
%%%   together as the next batch: one write and one file:sync/1 per batch on every node.
%%% - The leader sends the batch to every follower that has joined it and writes and syncs
%%%   its own log meanwhile; each follower writes and syncs before it acks. A batch is
%%%   acknowledged once every joined follower has acked it (a follower silent for
%%%   ?REPLICATE_TIMEOUT is dropped and must re-join), and only if the acks, the leader's
%%%   own included, come from a majority of the members. The members are in the log
%%%   ({members, Nodes}: every node that ever joined). So an acknowledged write is on the
%%%   disk of every live replica and of a majority, and a leader that lost its followers
%%%   acknowledges nothing.
%%% - A follower rejects entries of a lower term; a leader that learns of a higher term (a
%%%   rejection, a join, a global name conflict) steps down: writes it had written answer
%%%   {error, timeout} (may or may not survive), writes it had only queued answer
%%%   {error, not_leader} (leader_call/2 sends them to the new leader).
%%% - When the leader dies, followers see its 'DOWN' and race for the global name; only a
%%%   node that reaches a majority of the members may take it (a fresh log, with no
%%%   members yet, may lead alone). The winner asks every reachable replica for its log's
%%%   shape (log_info/1, read from ETS so that two electing nodes never wait on each
%%%   other), adopts the most up-to-date log (highest last term, then longest; acknowledged
%%%   entries are in it), starts its term with a {leader, Node} entry, and brings every
%%%   replica to its log. A node without a majority waits (standby) and tries again.
%%% - Joining (a restarted node, or a follower after an election): the follower sends the
%%%   terms of its log; the leader finds the last index where both logs agree and sends
%%%   the rest. The follower truncates its log file to that index (rolling back its
%%%   replica) and appends the leader's entries: a replica never keeps an entry the
%%%   leader does not have.
%%% - Followers make replicated entries readable at once or after lag_ms.
%%%
%%% Log format: <data_dir>/<Store>.log, a sequence of frames
%%% <<Size:32/big, (term_to_binary({Index, Term, Entry})):Size/binary>>, Index 1, 2, ...,
%%% Term {N, LeaderNode}, and Entry one of
%%%   {event, Stream, EventRecord}            (EventRecord holds event_number)
%%%   {snapshot, {Source, Stream, Version}, Record} | {snapshot_deleted, {S, St, V}}
%%%   {subscription, Key, Map} | {subscription_deleted, Key}
%%%   {leader, Node}                          (first entry of each term)
%%%   {members, [Node]}                       (the cluster, from this entry on)
%%% A torn frame at the end (a crash while writing) is cut off at start-up. Frames of the
%%% earlier format (a bare Entry, also {snapshots_reset, _} | {subscriptions_reset, _})
%%% are read as entries of term {0, ''}.
-module(testbed_store).
-behaviour(gen_server).

-export([start_link/1, await_ready/2, server/1, tab/1, known/1, leader/1, leader_node/1, leader_call/2,
         local_version/2, local_configs/0, status/1, read_log/1, read_frames/1, log_path/2,
         match_index/4, log_info/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(NO_TERM, {0, ''}).
-define(REPLICATE_TIMEOUT, 5000).

-record(st, {store, tab, meta, log, path, size = 0,
             ltab,                 % private ordered_set: {Index, Term, Offset, Entry}
             last = 0,             % last index in the log
             terms = [],           % [{FirstIndex, Term}] of the log, newest first
             term = ?NO_TERM,      % the highest term seen
             role = electing, leader, leader_mon,
             persisted = #{},      % Stream => version in the log
             assigned = #{},       % leader: Stream => version, queued writes included
             replicas = #{},       % leader: follower pid => monitor
             members = [],         % the cluster: the last {members, _} entry of the log
             standby = false,      % no leader, and too few members reachable to elect one
             inflight,             % leader: the batch being replicated
             queue = [],           % leader: writes waiting for the next batch, newest first
             flush = false,        % leader: a flush message is on its way
             subs = #{},           % subscription key => {Bucket, Map}
             buckets = #{},        % Bucket => #{Key => Map} (emitter index)
             lag = 0, pending = [], created_us, synced = false, waiters = []}).

%% ---------------------------------------------------------------- API

start_link(Store) -> gen_server:start_link({local, server(Store)}, ?MODULE, Store, []).

%% @doc Returns once this node's replica serves: it leads, or it has caught up.
await_ready(Store, Timeout) -> gen_server:call(server(Store), await_ready, Timeout).

%% @doc The locally registered name of a store's server.
server(Store) -> list_to_atom("testbed_store_" ++ atom_to_list(Store)).

%% @doc The replica table that workers read, or `undefined' for an unknown store.
tab(Store) -> persistent_term:get({?MODULE, Store}, undefined).

%% @doc Whether this node serves the store.
known(Store) -> tab(Store) =/= undefined.

%% @doc The leader's pid, or `undefined' during an election.
leader(Store) -> global:whereis_name({testbed_leader, Store}).

leader_node(Store) ->
    case leader(Store) of
        undefined -> undefined;
        Pid -> node(Pid)
    end.

%% @doc Sends a write to the leader; retries while there is none (not delivered).
leader_call(Store, Req) -> leader_call(Store, Req, 60).

leader_call(_Store, _Req, 0) -> {error, no_leader};
leader_call(Store, Req, Tries) ->
    case leader(Store) of
        undefined -> retry(Store, Req, Tries);
        Pid ->
            try gen_server:call(Pid, Req, 10000) of
                {error, not_leader} -> retry(Store, Req, Tries);
                Reply -> Reply
            catch
                exit:{noproc, _} -> retry(Store, Req, Tries);
                exit:{timeout, _} -> {error, timeout};
                exit:{Reason, _} -> {error, {leader_unavailable, Reason}}
            end
    end.

retry(Store, Req, Tries) ->
    timer:sleep(100),
    leader_call(Store, Req, Tries - 1).

%% @doc The version of a stream in this node's replica (-1 when it does not exist).
local_version(Store, Stream) ->
    case tab(Store) of
        undefined -> -1;
        Tab ->
            case ets:lookup(Tab, {version, Stream}) of
                [{_, V}] -> V;
                [] -> -1
            end
    end.

%% @doc This node's entries of list_stores.
local_configs() ->
    [#{node => node(), store => gen_server:call(server(S), config)}
     || S <- testbed_app:env(stores)].

%% @doc The shape of this node's log of Store (`#{pid, term, last, terms}'), read without
%% calling the store server: two nodes electing at once ask each other for it.
log_info(Store) ->
    case persistent_term:get({?MODULE, Store, meta}, undefined) of
        undefined -> undefined;
        Meta -> ets:lookup_element(Meta, info, 2)
    end.

%% @doc Role, leader, term and persisted versions (for health checks and tests).
status(Store) -> gen_server:call(server(Store), status).

log_path(DataDir, Store) -> filename:join(DataDir, atom_to_list(Store) ++ ".log").

%% @doc Every entry of a log file, in order (a torn last frame is ignored).
read_log(Path) -> [E || {_, _, E} <- read_frames(Path)].

%% @doc Every frame of a log file as {Index, Term, Entry}.
read_frames(Path) ->
    case file:read_file(Path) of
        {ok, Bin} -> {Rows, _Good} = scan(Bin), [{I, T, E} || {I, T, _, E} <- Rows];
        {error, enoent} -> []
    end.

scan(Bin) -> scan(Bin, 0, 1, []).

scan(<<Size:32, Frame:Size/binary, Rest/binary>>, Off, Next, Acc) ->
    {I, T, E} = case binary_to_term(Frame) of
                    {I0, T0, E0} when is_integer(I0) -> {I0, T0, E0};
                    E0 -> {Next, ?NO_TERM, E0}
                end,
    scan(Rest, Off + 4 + Size, I + 1, [{I, T, Off, E} | Acc]);
scan(_, Off, _, Acc) -> {lists:reverse(Acc), Off}.

%% @doc The last index at which two logs agree, given their term boundaries
%% ([{FirstIndex, Term}], newest first) and last indexes. Entries with the same index
%% and term are the same entry, and so are all entries before them.
match_index(TermsA, LastA, TermsB, LastB) ->
    RA = ranges(TermsA, LastA),
    RB = ranges(TermsB, LastB),
    lists:max([0 | [min(HiA, HiB) || {T, LoA, HiA} <- RA, {T2, LoB, HiB} <- RB, T =:= T2,
                                     max(LoA, LoB) =< min(HiA, HiB)]]).

ranges(Terms, Last) ->
    {Rs, _} = lists:foldl(fun({First, T}, {Acc, Hi}) -> {[{T, First, Hi} | Acc], First - 1} end,
                          {[], Last}, Terms),
    Rs.

%% ---------------------------------------------------------------- server

init(Store) ->
    process_flag(trap_exit, true),
    DataDir = testbed_app:env(data_dir),
    Path = log_path(DataDir, Store),
    ok = filelib:ensure_dir(Path),
    Tab = ets:new(testbed_replica, [set, public, {read_concurrency, true}]),
    LTab = ets:new(testbed_log, [ordered_set, private]),
    Meta = ets:new(testbed_meta, [set, public, {read_concurrency, true}]),
    St0 = #st{store = Store, tab = Tab, ltab = LTab, meta = Meta, path = Path,
              lag = testbed_app:env(lag_ms, 0), created_us = testbed_rec:now_us()},
    St1 = publish(recover(St0)),
    persistent_term:put({?MODULE, Store}, Tab),
    persistent_term:put({?MODULE, Store, meta}, Meta),
    self() ! elect,
    {ok, St1}.

%% Replays the log into the replica; cuts off a torn tail.
recover(#st{path = Path, ltab = LTab} = St) ->
    Bin = case file:read_file(Path) of
              {ok, B} -> B;
              {error, enoent} -> <<>>
          end,
    {Rows, Good} = scan(Bin),
    {ok, Log} = file:open(Path, [read, write, raw, binary]),
    {ok, Good} = file:position(Log, Good),
    case Good < byte_size(Bin) of
        true -> ok = file:truncate(Log);
        false -> ok
    end,
    ets:insert(LTab, Rows),
    Terms = lists:foldl(fun({I, T, _, _}, [{_, T} | _] = Acc) when I > 0 -> Acc;
                           ({I, T, _, _}, Acc) -> [{I, T} | Acc]
                        end, [], Rows),
    Last = case Rows of [] -> 0; _ -> element(1, lists:last(Rows)) end,
    Entries = [E || {_, _, _, E} <- Rows],
    St1 = St#st{log = Log, size = Good, last = Last, terms = Terms, term = last_term(Terms)},
    St2 = apply_entries(Entries, track(Entries, St1)),
    St2#st{assigned = St2#st.persisted}.

handle_call(config, _From, St) ->
    {reply, testbed_rec:store_config(St#st.store, St#st.created_us), St};
handle_call(status, _From, #st{} = St) ->
    {reply, #{role => St#st.role, synced => St#st.synced, leader => St#st.leader,
              persisted => St#st.persisted, term => St#st.term, last_index => St#st.last,
              replicas => maps:keys(St#st.replicas), members => St#st.members,
              standby => St#st.standby,
              events => lists:sum([V + 1 || V <- maps:values(St#st.persisted)])}, St};
handle_call(await_ready, From, #st{synced = false, standby = false, waiters = W} = St) ->
    {noreply, St#st{waiters = [From | W]}};
handle_call(await_ready, _From, St) ->
    {reply, ok, St};
handle_call({entries_from, From}, _From, St) ->
    {reply, entries_after(From - 1, St), St};
handle_call(_Write, _From, #st{role = Role} = St) when Role =/= leader ->
    {reply, {error, not_leader}, St};
handle_call({append, Stream, Expected, Events}, From, St) ->
    Cur = maps:get(Stream, St#st.assigned, -1),
    case check_expected(Expected, Cur) of
        ok when Events =:= [] -> {reply, {ok, Cur}, St};
        ok ->
            Recs = records(Stream, Cur, Events),
            V = Cur + length(Events),
            Item = {From, {ok, V}, [{event, Stream, R} || R <- Recs], Recs, []},
            {noreply, enqueue(Item, St#st{assigned = (St#st.assigned)#{Stream => V}})};
        Error -> {reply, Error, St}
    end;
handle_call({write, Op}, From, St) ->
    case write_entries(Op, St) of
        {[], _} -> {reply, ok, St};
        {Entries, Replay} -> {noreply, enqueue({From, ok, Entries, [], Replay}, St)}
    end.

%% Leader side of replication.
handle_cast({join, Pid, Their, Terms, Last}, #st{role = leader} = St) ->
    case Their > St#st.term of
        true -> {noreply, step_down(Their, St)};
        false -> {noreply, add_follower(Pid, Terms, Last, St)}
    end;
handle_cast({join, Pid, _, _, _}, St) ->
    gen_server:cast(Pid, {not_leader, self()}),
    {noreply, St};
handle_cast({ack, Pid, Term, Index}, #st{role = leader, term = Term} = St) ->
    {noreply, acked(Pid, Index, St)};
handle_cast({ack, _, _, _}, St) ->
    {noreply, St};
handle_cast({rejected, Pid, Their, Why}, #st{role = leader} = St) ->
    case Their > St#st.term of
        true -> {noreply, step_down(Their, St)};
        false -> {noreply, drop_replica(Pid, Why, St)}
    end;
handle_cast({rejected, _, Their, _}, St) ->
    {noreply, publish(St#st{term = max(Their, St#st.term)})};
%% Follower side.
handle_cast({append_entries, Term, Leader, _, _, _, _}, #st{term = Mine} = St) when Term < Mine ->
    gen_server:cast(Leader, {rejected, self(), Mine, stale_term}),
    {noreply, St};
handle_cast({append_entries, Term, Leader, PrevI, PrevT, IEs, Kind}, St0) ->
    St1 = case St0#st.role of
              leader -> step_down(Term, St0);
              _ -> St0
          end,
    St2 = follow(Leader, publish(St1#st{term = Term})),
    case install(PrevI, PrevT, IEs, St2) of
        {ok, St3} ->
            gen_server:cast(Leader, {ack, self(), Term, St3#st.last}),
            {noreply, case Kind of catch_up -> ready(St3); normal -> St3 end};
        mismatch ->
            gen_server:cast(Leader, {rejected, self(), Term, mismatch}),
            {noreply, join_leader(Leader, St2)}
    end;
handle_cast({dropped, Leader}, #st{leader = Leader, role = follower} = St) ->
    {noreply, join_leader(Leader, St)};
handle_cast({not_leader, Pid}, #st{leader = Pid, role = follower} = St) ->
    erlang:demonitor(St#st.leader_mon, [flush]),
    erlang:send_after(20 + rand:uniform(30), self(), elect),
    {noreply, St#st{role = electing, leader = undefined, leader_mon = undefined, synced = false}};
handle_cast(_, St) ->
    {noreply, St}.

handle_info(elect, #st{role = electing} = St) -> {noreply, elect(St)};
handle_info(elect, St) -> {noreply, St};
handle_info(flush, St) -> {noreply, flush(St#st{flush = false})};
handle_info(apply_due, St) -> {noreply, apply_due(St)};
handle_info({batch_timeout, Last}, #st{inflight = #{last := Last, waiting := W}} = St) ->
    [gen_server:cast(P, {dropped, self()}) || P <- W],
    {noreply, lists:foldl(fun(P, A) -> drop_replica(P, timeout, A) end, St, W)};
handle_info({batch_timeout, _}, St) -> {noreply, St};
handle_info({'DOWN', Ref, process, _, _}, #st{leader_mon = Ref} = St) ->
    erlang:send_after(rand:uniform(30), self(), elect),
    {noreply, St#st{role = electing, leader = undefined, leader_mon = undefined,
                    synced = false}};
handle_info({'DOWN', Ref, process, Pid, _}, #st{replicas = R} = St) ->
    case maps:find(Pid, R) of
        {ok, Ref} -> {noreply, drop_replica(Pid, down, St)};
        _ -> {noreply, St}
    end;
handle_info({global_name_conflict, _Name, _Other}, #st{role = leader} = St) ->
    %% global unregistered both leaders: elect again (the winner adopts the better log).
    {noreply, step_down(St#st.term, St)};
handle_info({global_name_conflict, _Name, _Other}, St) ->
    erlang:send_after(rand:uniform(100), self(), elect),
    {noreply, St#st{role = electing, synced = false}};
handle_info(_, St) -> {noreply, St}.

terminate(_, #st{log = Log}) when Log =/= undefined -> file:close(Log);
terminate(_, _) -> ok.

%% ---------------------------------------------------------------- election

elect(#st{store = Store} = St) ->
    Name = {testbed_leader, Store},
    case global:whereis_name(Name) of
        undefined ->
            %% As Ra: only a node that reaches a majority of the cluster may lead, so the
            %% most up-to-date log among them holds every acknowledged write.
            Reached = [node() | [N || #{pid := P} <- peer_infos(Store), N <- [node(P)]]],
            case quorum_of(Reached, St#st.members) of
                false -> standby(Reached, St);
                true ->
                    case global:register_name(Name, self(), fun global:notify_all_name/3) of
                        yes -> become_leader(St#st{standby = false});
                        no -> erlang:send_after(rand:uniform(30), self(), elect), St
                    end
            end;
        Me when Me =:= self() -> become_leader(St#st{standby = false});
        Pid -> join_leader(Pid, St#st{standby = false})
    end.

%% Too few members reachable: wait for more (await_ready answers meanwhile, so that a
%% whole cluster can be restarted one node after another).
standby(Reached, #st{standby = Was, waiters = W} = St) ->
    Was orelse logger:notice("testbed: ~p waits for a majority of ~p to elect a leader of ~p (reached ~p)",
                             [node(), St#st.members, St#st.store, Reached]),
    [gen_server:reply(From, ok) || From <- W],
    erlang:send_after(200, self(), elect),
    St#st{standby = true, waiters = []}.

%% Whether Nodes hold a majority of the cluster Members (any node, while none is known).
quorum_of(_Nodes, []) -> true;
quorum_of(Nodes, Members) ->
    length([N || N <- lists:usort(Nodes), lists:member(N, Members)]) >= length(Members) div 2 + 1.

peer_infos(Store) -> lists:append([peer_info(N, Store) || N <- nodes()]).

%% Takes over: adopt the most up-to-date log among the reachable replicas, start a new
%% term, and bring every replica to this log.
become_leader(#st{store = Store} = St0) ->
    St = flush_pending(St0),
    Infos = peer_infos(Store),
    St1 = adopt_best(Infos, St),
    Max = lists:max([N || {N, _} <- [St1#st.term | [T || #{term := T} <- Infos]]]),
    Term = {Max + 1, node()},
    %% The cluster: every node that ever took part, and the ones here now.
    Members = lists:usort([node() | [node(P) || #{pid := P} <- Infos]] ++ St1#st.members),
    Next = St1#st.last + 1,
    St2 = write_log([{Next, Term, {leader, node()}}]
                    ++ [{Next + 1, Term, {members, Members}} || Members =/= St1#st.members],
                    St1#st{term = Term}),
    logger:notice("testbed: ~p is now the leader of ~p (term ~p, members ~p)",
                  [node(), Store, Term, Members]),
    St3 = St2#st{role = leader, leader = self(), leader_mon = undefined, replicas = #{},
                 assigned = St2#st.persisted, queue = [], inflight = undefined},
    %% Every live replica is a follower from the first write on: its own join may come
    %% later, and a write acknowledged before it must still be on its disk.
    St4 = lists:foldl(fun(#{pid := P, terms := Ts, last := L}, A) -> add_follower(P, Ts, L, A) end,
                      St3, Infos),
    ready(begin_wait([], St4)).

peer_info(Node, Store) ->
    case catch erpc:call(Node, ?MODULE, log_info, [Store], 2000) of
        #{pid := _} = Info -> [Info];
        _ -> []
    end.

%% Keeps log_info/1's answer current (after every change of log or term).
publish(#st{meta = Meta} = St) ->
    ets:insert(Meta, {info, #{pid => self(), term => St#st.term, last => St#st.last,
                              terms => St#st.terms}}),
    St.

adopt_best([], St) -> St;
adopt_best(Infos, St) ->
    Rank = fun(#{terms := Ts, last := L}) -> {last_term(Ts), L} end,
    Best = lists:last(lists:sort(fun(A, B) -> Rank(A) =< Rank(B) end, Infos)),
    case Rank(Best) > {last_term(St#st.terms), St#st.last} of
        false -> St;
        true ->
            #{pid := Pid, terms := Ts, last := L} = Best,
            Match = match_index(St#st.terms, St#st.last, Ts, L),
            case catch gen_server:call(Pid, {entries_from, Match + 1}, 10000) of
                IEs when is_list(IEs) ->
                    logger:notice("testbed: ~p adopts ~p's log from index ~p",
                                  [node(), node(Pid), Match + 1]),
                    {ok, St1} = install(Match, term_at(Match, St#st.terms), IEs, St),
                    flush_pending(St1);
                _ -> St
            end
    end.

join_leader(Pid, St) ->
    St1 = follow(Pid, St),
    gen_server:cast(Pid, {join, self(), St1#st.term, St1#st.terms, St1#st.last}),
    St1.

follow(Leader, #st{leader = Leader, role = follower} = St) -> St;
follow(Leader, #st{leader_mon = Old} = St) ->
    Old =:= undefined orelse erlang:demonitor(Old, [flush]),
    St#st{role = follower, leader = Leader, leader_mon = erlang:monitor(process, Leader),
          standby = false}.

%% A leader that learned of a higher term (or lost its global name) stops leading.
step_down(Their, #st{store = Store} = St) ->
    logger:notice("testbed: ~p steps down as leader of ~p (term ~p, saw ~p)",
                  [node(), Store, St#st.term, Their]),
    case St#st.inflight of
        #{items := Items, timer := Timer} ->
            erlang:cancel_timer(Timer),
            %% Written here (maybe elsewhere too), never acknowledged: it may or may not
            %% survive, so no retry.
            [reply(From, {error, timeout}) || {From, _, _, _, _} <- Items];
        undefined -> ok
    end,
    %% Written nowhere: leader_call/2 retries these at the new leader.
    [reply(From, {error, not_leader}) || {From, _, _, _, _} <- St#st.queue],
    [erlang:demonitor(M, [flush]) || M <- maps:values(St#st.replicas)],
    Name = {testbed_leader, Store},
    Self = self(),
    case global:whereis_name(Name) of
        Self -> global:unregister_name(Name);
        _ -> ok
    end,
    erlang:send_after(20 + rand:uniform(30), self(), elect),
    publish(St#st{role = electing, leader = undefined, leader_mon = undefined, synced = false,
                  term = max(Their, St#st.term), replicas = #{}, inflight = undefined,
                  queue = [], assigned = St#st.persisted}).

%% Serving: a leader, or a follower that has caught up with its leader.
ready(#st{waiters = W} = St) ->
    [gen_server:reply(From, ok) || From <- W],
    St#st{synced = true, waiters = []}.

%% ---------------------------------------------------------------- leader: batches

reply(none, _) -> ok;
reply(From, Reply) -> gen_server:reply(From, Reply).

enqueue(Item, #st{queue = Q} = St) -> schedule_flush(St#st{queue = [Item | Q]}).

%% The flush message goes behind the writes already in the mailbox, which join the batch.
schedule_flush(#st{inflight = undefined, flush = false, queue = [_ | _]} = St) ->
    self() ! flush,
    St#st{flush = true};
schedule_flush(St) -> St.

flush(#st{role = leader, inflight = undefined, queue = [_ | _] = Q, term = T, last = Last} = St) ->
    Items = lists:reverse(Q),
    Entries = lists:append([Es || {_, _, Es, _, _} <- Items]),
    {IEs, _} = lists:mapfoldl(fun(E, I) -> {{I, T, E}, I + 1} end, Last + 1, Entries),
    Msg = {append_entries, T, self(), Last, term_at(Last, St#st.terms), IEs, normal},
    %% Followers write and sync while we do.
    [gen_server:cast(P, Msg) || P <- maps:keys(St#st.replicas)],
    St1 = apply_entries(Entries, write_log(IEs, St#st{queue = []})),
    begin_wait(Items, St1);
flush(St) -> St.

begin_wait(Items, #st{last = Last, replicas = R} = St) ->
    Timer = erlang:send_after(?REPLICATE_TIMEOUT, self(), {batch_timeout, Last}),
    check_done(St#st{inflight = #{last => Last, waiting => maps:keys(R), acked => [node()],
                                  items => Items, timer => Timer}}).

acked(Pid, Index, #st{inflight = #{last := Last, waiting := W, acked := A} = B} = St)
  when Index >= Last ->
    case lists:member(Pid, W) of
        true -> check_done(St#st{inflight = B#{waiting := W -- [Pid], acked := [node(Pid) | A]}});
        false -> St
    end;
acked(_, _, St) -> St.

check_done(#st{inflight = #{waiting := [], acked := Acked, items := Items, timer := Timer}} = St) ->
    erlang:cancel_timer(Timer),
    case quorum_of(Acked, St#st.members) of
        true ->
            [begin
                 emit(Recs, St),
                 [replay(M, St) || M <- Replays],
                 reply(From, Reply)
             end || {From, Reply, _, Recs, Replays} <- Items];
        false ->
            Items =:= [] orelse
                logger:warning("testbed: ~p: no quorum of ~p (acks from ~p): ~p writes not acknowledged",
                               [St#st.store, St#st.members, lists:usort(Acked), length(Items)]),
            [reply(From, {error, timeout}) || {From, _, _, _, _} <- Items]
    end,
    schedule_flush(St#st{inflight = undefined});
check_done(St) -> St.

%% A follower that died, fell silent or lost track of the log: it is no longer waited for
%% and must join again.
drop_replica(Pid, Why, #st{replicas = R} = St) ->
    case maps:take(Pid, R) of
        {Mon, Rs} ->
            Why =:= down orelse logger:warning("testbed: replica ~p dropped (~p)", [Pid, Why]),
            erlang:demonitor(Mon, [flush]),
            St1 = St#st{replicas = Rs},
            case St1#st.inflight of
                #{waiting := W} = B -> check_done(St1#st{inflight = B#{waiting := W -- [Pid]}});
                undefined -> St1
            end;
        error -> St
    end.

%% Sends a follower everything after the last index where our logs agree; from then on
%% it receives every batch and counts toward the quorum.
add_follower(Pid, Terms, Last, #st{replicas = R} = St) ->
    Match = match_index(St#st.terms, St#st.last, Terms, Last),
    gen_server:cast(Pid, {append_entries, St#st.term, self(), Match, term_at(Match, St#st.terms),
                          entries_after(Match, St), catch_up}),
    R1 = case maps:is_key(Pid, R) of
             true -> R;
             false -> R#{Pid => erlang:monitor(process, Pid)}
         end,
    Inflight = case St#st.inflight of
                   #{waiting := W} = B -> B#{waiting := lists:usort([Pid | W])};
                   undefined -> undefined
               end,
    St1 = St#st{replicas = R1, inflight = Inflight},
    %% A node new to the cluster becomes a member through the log, like any write.
    case lists:member(node(Pid), St#st.members) of
        true -> St1;
        false ->
            Members = lists:usort([node(Pid) | St#st.members]),
            case [x || {_, _, [{members, M}], _, _} <- St1#st.queue, M =:= Members] of
                [] -> enqueue({none, ok, [{members, Members}], [], []}, St1);
                _ -> St1
            end
    end.

entries_after(Index, #st{ltab = L}) ->
    ets:select(L, [{{'$1', '$2', '_', '$3'}, [{'>', '$1', Index}], [{{'$1', '$2', '$3'}}]}]).

%% ---------------------------------------------------------------- writes

check_expected(any, _) -> ok;
check_expected(stream_exists, Cur) when Cur >= 0 -> ok;
check_expected(Cur, Cur) when is_integer(Cur) -> ok;
check_expected(_, Cur) -> {error, {wrong_expected_version, Cur}}.

records(Stream, Cur, Events) ->
    {Recs, _} = lists:mapfoldl(
                  fun(E, {N, Last}) ->
                          Us = max(testbed_rec:now_us(), Last + 1),
                          {testbed_rec:event_record(Stream, N, E, Us), {N + 1, Us}}
                  end, {Cur + 1, 0}, Events),
    Recs.

%% The entries a write produces, and the subscriptions to replay afterwards.
write_entries({save_subscription, Type, Selector, Name, StartFrom, Subscriber},
              #st{store = Store, subs = Subs}) ->
    Key = testbed_rec:subscription_key(Type, Selector, Name, Store),
    Persistent = Name =/= <<"transient">>,
    From = case maps:find(Key, Subs) of
               {ok, {_, #{start_from := Acked}}} when Persistent -> Acked;
               _ -> StartFrom
           end,
    M = #{type => Type, selector => Selector, subscription_name => Name,
          start_from => From, subscriber => Subscriber},
    {[{subscription, Key, M}], [M || Persistent]};
write_entries({remove_subscription, Type, Selector, Name}, #st{store = Store}) ->
    {[{subscription_deleted, testbed_rec:subscription_key(Type, Selector, Name, Store)}], []};
write_entries({ack_event, Name, _Pid, Event}, #st{subs = Subs}) ->
    N = case Event of
            #{event_number := EN} when is_integer(EN) -> EN;
            _ -> -1
        end,
    {[{subscription, K, M#{start_from => N + 1}}
      || {K, {_, #{subscription_name := SN, start_from := F} = M}} <- maps:to_list(Subs),
         SN =:= Name, N + 1 > F], []};
write_entries({record_snapshot, Src, Stream, V, Rec}, _) ->
    {[{snapshot, {Src, Stream, V}, Rec}], []};
write_entries({delete_snapshot, Src, Stream, V}, _) ->
    {[{snapshot_deleted, {Src, Stream, V}}], []}.

%% ---------------------------------------------------------------- the log

%% Follower (and a leader adopting a better log): make our log equal to the sender's
%% prefix up to PrevI followed by IEs. Entries we already hold (same index and term) are
%% kept; from the first difference on, our log file is truncated and rewritten.
install(PrevI, PrevT, IEs, #st{last = Last, terms = Terms} = St) ->
    case PrevI =< Last andalso term_at(PrevI, Terms) =:= PrevT of
        false -> mismatch;
        true ->
            Common = common(PrevI, IEs, St),
            St1 = truncate_to(Common, St),
            {ok, receive_entries([E || {I, _, _} = E <- IEs, I > Common], St1)}
    end.

common(Prev, [{I, T, _} | Rest], #st{last = Last, terms = Terms} = St) when I =< Last ->
    case term_at(I, Terms) of
        T -> common(I, Rest, St);
        _ -> Prev
    end;
common(Prev, _, _) -> Prev.

%% Cuts the log after index K: the file (synced), the index, and the replica.
truncate_to(K, #st{last = Last} = St) when K >= Last -> St;
truncate_to(K, St0) ->
    St = flush_pending(St0),
    #st{ltab = L, tab = Tab, log = Log} = St,
    Gone = ets:select(L, [{{'$1', '_', '$2', '$3'}, [{'>', '$1', K}], [{{'$1', '$2', '$3'}}]}]),
    [{_, Off, _} | _] = Gone,
    {ok, Off} = file:position(Log, Off),
    ok = file:truncate(Log),
    ok = file:sync(Log),
    ets:select_delete(L, [{{'$1', '_', '_', '_'}, [{'>', '$1', K}], [true]}]),
    logger:notice("testbed: ~p truncates its log of ~p after index ~p (~p entries)",
                  [node(), St#st.store, K, length(Gone)]),
    Events = [{S, N} || {_, _, {event, S, #{event_number := N}}} <- Gone],
    [ets:delete(Tab, {event, S, N}) || {S, N} <- Events],
    Firsts = lists:foldl(fun({S, N}, M) -> maps:update_with(S, fun(X) -> min(X, N) end, N, M) end,
                         #{}, Events),
    P = maps:fold(fun(S, 0, Acc) ->
                          ets:delete(Tab, {version, S}),
                          maps:remove(S, Acc);
                     (S, N, Acc) ->
                          ets:insert(Tab, {{version, S}, N - 1}),
                          Acc#{S => N - 1}
                  end, St#st.persisted, Firsts),
    Members = case [x || {_, _, {members, _}} <- Gone] of
                  [] -> St#st.members;
                  _ -> members_in(ets:select(L, [{{'_', '_', '_', {members, '$1'}}, [], [{{members, '$1'}}]}]), [])
              end,
    St1 = publish(St#st{persisted = P, assigned = P, last = K, size = Off, members = Members,
                        terms = [B || {F, _} = B <- St#st.terms, F =< K]}),
    case [x || {_, _, E} <- Gone, not lists:member(element(1, E), [event, leader, members])] of
        [] -> St1;
        _ -> rebuild_state(St1)
    end.

%% Subscriptions and snapshots again from the log (after a truncation removed some).
rebuild_state(#st{ltab = L, tab = Tab} = St) ->
    Kept = [E || {_, _, _, E} <- ets:tab2list(L), element(1, E) =/= event],
    ets:match_delete(Tab, {{sub, '_'}, '_'}),
    ets:match_delete(Tab, {{snapshot, '_', '_', '_'}, '_'}),
    apply_entries(Kept, St#st{subs = #{}, buckets = #{}}).

%% Appends indexed entries to the log and syncs; tracks versions and term boundaries.
write_log([], St) -> St;
write_log(IEs, #st{log = Log, size = Size0, ltab = L, terms = Terms0} = St) ->
    {Frames, Rows, Size, Terms} =
        lists:foldl(fun({I, T, E} = F, {Fs, Rs, Off, Ts}) ->
                            B = term_to_binary(F),
                            Ts1 = case Ts of
                                      [{_, T} | _] -> Ts;
                                      _ -> [{I, T} | Ts]
                                  end,
                            {[[<<(byte_size(B)):32>>, B] | Fs], [{I, T, Off, E} | Rs],
                             Off + 4 + byte_size(B), Ts1}
                    end, {[], [], Size0, Terms0}, IEs),
    ok = file:write(Log, lists:reverse(Frames)),
    ok = file:sync(Log),
    ets:insert(L, Rows),
    {LastI, _, _} = lists:last(IEs),
    publish(track([E || {_, _, E} <- IEs], St#st{size = Size, terms = Terms, last = LastI})).

%% The last cluster membership written in a list of entries (Default when none).
members_in(Entries, Default) ->
    lists:foldl(fun({members, M}, _) -> M; (_, Acc) -> Acc end, Default, Entries).

term_at(I, [{F, T} | _]) when F =< I -> T;
term_at(I, [_ | Rest]) -> term_at(I, Rest);
term_at(_, []) -> ?NO_TERM.

last_term([{_, T} | _]) -> T;
last_term([]) -> ?NO_TERM.

%% Follower: persist now, make readable now or after the lag.
receive_entries([], St) -> St;
receive_entries(IEs, St) ->
    St1 = write_log(IEs, St),
    Entries = [E || {_, _, E} <- IEs],
    case St1#st.lag of
        0 -> apply_entries(Entries, St1);
        Lag ->
            Due = erlang:monotonic_time(millisecond) + Lag,
            St1#st.pending =:= [] andalso erlang:send_after(Lag, self(), apply_due),
            St1#st{pending = St1#st.pending ++ [{Due, Entries}]}
    end.

track(Entries, St) ->
    P = lists:foldl(fun({event, Stream, #{event_number := N}}, Acc) ->
                            maps:put(Stream, max(N, maps:get(Stream, Acc, -1)), Acc);
                       (_, Acc) -> Acc
                    end, St#st.persisted, Entries),
    St#st{persisted = P, members = members_in(Entries, St#st.members)}.

apply_due(#st{pending = Pending} = St) ->
    Now = erlang:monotonic_time(millisecond),
    {Due, Later} = lists:splitwith(fun({D, _}) -> D =< Now end, Pending),
    St1 = lists:foldl(fun({_, Es}, A) -> apply_entries(Es, A) end, St, Due),
    case Later of
        [{Next, _} | _] -> erlang:send_after(max(0, Next - Now), self(), apply_due);
        [] -> ok
    end,
    St1#st{pending = Later}.

flush_pending(#st{pending = []} = St) -> St;
flush_pending(#st{pending = P} = St) ->
    St1 = lists:foldl(fun({_, Es}, A) -> apply_entries(Es, A) end, St, P),
    St1#st{pending = []}.

apply_entries(Entries, St) -> lists:foldl(fun apply_entry/2, St, Entries).

apply_entry({event, Stream, #{event_number := N} = R}, #st{tab = Tab} = St) ->
    Cur = case ets:lookup(Tab, {version, Stream}) of [{_, V}] -> V; [] -> -1 end,
    ets:insert(Tab, [{{event, Stream, N}, R}, {{version, Stream}, max(N, Cur)}]),
    St;
apply_entry({snapshot, {S, Sm, V}, R}, #st{tab = Tab} = St) ->
    ets:insert(Tab, {{snapshot, S, Sm, V}, R}),
    St;
apply_entry({snapshot_deleted, {S, Sm, V}}, #st{tab = Tab} = St) ->
    ets:delete(Tab, {snapshot, S, Sm, V}),
    St;
apply_entry({subscription, K, M}, #st{tab = Tab} = St) ->
    ets:insert(Tab, {{sub, K}, M}),
    index_sub(K, M, unindex_sub(K, St));
apply_entry({subscription_deleted, K}, #st{tab = Tab} = St) ->
    ets:delete(Tab, {sub, K}),
    unindex_sub(K, St);
apply_entry({snapshots_reset, L}, #st{tab = Tab} = St) ->
    ets:match_delete(Tab, {{snapshot, '_', '_', '_'}, '_'}),
    ets:insert(Tab, [{{snapshot, S, Sm, V}, R} || {{S, Sm, V}, R} <- L]),
    St;
apply_entry({subscriptions_reset, L}, #st{tab = Tab} = St) ->
    ets:match_delete(Tab, {{sub, '_'}, '_'}),
    ets:insert(Tab, [{{sub, K}, M} || {K, M} <- L]),
    lists:foldl(fun({K, M}, A) -> index_sub(K, M, A) end, St#st{subs = #{}, buckets = #{}}, L);
apply_entry(_, St) -> St.

%% ---------------------------------------------------------------- emitter (leader only)

%% Subscriptions are indexed by what an event must have to match them, so an append
%% looks only at the subscriptions of its stream, its event type, $all and map selectors.
bucket(#{type := by_stream, selector := <<"$all">>}) -> all;
bucket(#{type := by_stream, selector := <<"$", Stream/binary>>}) -> {stream, Stream};
bucket(#{type := by_event_type, selector := T}) when is_binary(T) -> {type, T};
bucket(_) -> other.

index_sub(K, M, #st{subs = S, buckets = B} = St) ->
    Bk = bucket(M),
    St#st{subs = S#{K => {Bk, M}}, buckets = B#{Bk => (maps:get(Bk, B, #{}))#{K => M}}}.

unindex_sub(K, #st{subs = S, buckets = B} = St) ->
    case maps:take(K, S) of
        {{Bk, _}, S1} ->
            In = maps:remove(K, maps:get(Bk, B)),
            St#st{subs = S1, buckets = case map_size(In) of 0 -> maps:remove(Bk, B); _ -> B#{Bk => In} end};
        error -> St
    end.

candidates(#{event_stream_id := S, event_type := T}, B) ->
    lists:append([maps:values(M) || K <- [all, {stream, S}, {type, T}, other],
                                    {ok, M} <- [maps:find(K, B)]]).

%% New events go to every matching subscription: a nil subscriber means a Phoenix.PubSub
%% broadcast on <<"Store:Selector">>, one event per message (each topic once per event);
%% a pid on this node gets {events, [Record]}; a pid elsewhere gets nothing, as in
%% ExESDB v0.11 whose emitter crashes on Process.alive?/1 of a remote pid.
emit([], _St) -> ok;
emit(_Recs, #st{buckets = B}) when map_size(B) =:= 0 -> ok;
emit(Recs, #st{buckets = B, store = Store}) ->
    [deliver(R, [S || S <- candidates(R, B), matches(S, R)], Store) || R <- Recs],
    ok.

deliver(_R, [], _Store) -> ok;
deliver(R, Subs, Store) ->
    Msg = {events, [R]},
    Topics = lists:usort([topic(Store, S) || #{subscriber := nil} = S <- Subs]),
    [testbed_pubsub:broadcast(T, Msg) || T <- Topics],
    [send_direct(P, Msg, S) || #{subscriber := P} = S <- Subs, is_pid(P)],
    ok.

send_direct(Pid, Msg, _S) when node(Pid) =:= node() -> Pid ! Msg;
send_direct(Pid, _Msg, #{subscription_name := Name}) ->
    logger:warning("testbed: subscription ~p has a subscriber on another node (~p): "
                   "nothing delivered (ExESDB v0.11's emitter crashes here)", [Name, Pid]).

topic(Store, #{selector := Sel}) when is_binary(Sel) ->
    <<(atom_to_binary(Store))/binary, ":", Sel/binary>>;
topic(Store, #{subscription_name := Name}) ->
    <<(atom_to_binary(Store))/binary, ":", Name/binary>>.

matches(#{type := by_stream, selector := <<"$all">>}, _) -> true;
matches(#{type := by_stream, selector := <<"$", Stream/binary>>}, #{event_stream_id := Stream}) -> true;
matches(#{type := by_event_type, selector := T}, #{event_type := T}) -> true;
matches(#{type := by_event_pattern, selector := P}, R) when is_map(P) ->
    lists:all(fun({K, V}) -> maps:get(K, R, undefined) =:= V end, maps:to_list(P));
matches(#{type := by_event_payload, selector := P}, #{data := D}) when is_map(P), is_map(D) ->
    lists:all(fun({K, V}) -> maps:get(K, D, undefined) =:= V end, maps:to_list(P));
matches(_, _) -> false.

%% A persistent subscription catches up from its start_from when it is saved: for one
%% stream, a look-up per event of it; otherwise a scan of the replica (once per save, not
%% per append).
replay(#{type := by_stream, selector := <<"$", Stream/binary>>, start_from := From} = Sub,
       #st{tab = Tab, store = Store}) when is_integer(From), Stream =/= <<"all">> ->
    Last = case ets:lookup(Tab, {version, Stream}) of
               [{_, V}] -> V;
               [] -> -1
           end,
    First = max(From, 0),
    [deliver(R, [Sub], Store) || First =< Last, N <- lists:seq(First, max(First, Last)),
                                 {_, R} <- ets:lookup(Tab, {event, Stream, N})],
    ok;
replay(#{start_from := From} = Sub, #st{tab = Tab, store = Store}) when is_integer(From) ->
    Recs = lists:sort(fun(#{created_epoch := A}, #{created_epoch := B}) -> A =< B end,
                      [R || {{event, _, N}, R} <- ets:tab2list(Tab), N >= From, matches(Sub, R)]),
    [deliver(R, [Sub], Store) || R <- Recs],
    ok;
replay(_, _) -> ok.
